package api

// ListQueriesForTest returns the queries ListOperations runs for f as an
// operator (the page, and the counts of waiting operations) with their
// arguments, for a test to EXPLAIN.
func ListQueriesForTest(s *Server, f ListOperationsParams) (list, waitingCounts string, args []any, err error) {
	q, err := s.filter(Principal{Role: RoleOperator}, f)
	if err != nil {
		return "", "", nil, err
	}
	waitingCounts = s.waitingCountsSQL(q)
	list, err = s.listSQL(q, f, defaultPageSize)
	return list, waitingCounts, q.args, err
}

// SetBulkBatchesPerRun makes s's bulk jobs continue as new after n batches.
func SetBulkBatchesPerRun(s *Server, n int) { s.bulkBatchesPerRun = n }

// StatusCountsQueryForTest returns the per-status counts query of
// ListOperations for f as an operator, with its arguments, to EXPLAIN.
func StatusCountsQueryForTest(s *Server, f ListOperationsParams) (string, []any, error) {
	q, err := s.filter(Principal{Role: RoleOperator}, f)
	if err != nil {
		return "", nil, err
	}
	return s.statusCountsSQL(q), q.args, nil
}
