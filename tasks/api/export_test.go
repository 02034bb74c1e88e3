package api

import "time"

// ListQueriesForTest returns the queries ListOperations runs for f as an
// operator (the page, and the counts per status and condition) with their
// arguments, for a test to EXPLAIN.
func ListQueriesForTest(s *Server, f ListOperationsParams) (list, counts string, args []any, err error) {
	q, err := s.filter(Principal{Role: RoleOperator}, f)
	if err != nil {
		return "", "", nil, err
	}
	counts = s.countsSQL(q)
	list, err = s.listSQL(q, f, defaultPageSize)
	return list, counts, q.args, err
}

// SetBulkBatchesPerRun makes s's bulk jobs continue as new after n batches.
func SetBulkBatchesPerRun(s *Server, n int) { s.bulkBatchesPerRun = n }

// CountsQueryForTest returns the counts query of ListOperations for f as
// an operator, with its arguments, to EXPLAIN.
func CountsQueryForTest(s *Server, f ListOperationsParams) (string, []any, error) {
	q, err := s.filter(Principal{Role: RoleOperator}, f)
	if err != nil {
		return "", nil, err
	}
	return s.countsSQL(q), q.args, nil
}

// SetPublishedTTL makes s read the published signal declarations again
// after d (0: at every use).
func SetPublishedTTL(s *Server, d time.Duration) { s.publishedTTL = d }
