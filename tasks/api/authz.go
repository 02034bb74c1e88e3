package api

import (
	"context"
	"net/http"
	"slices"
)

// rolesFor lists the roles allowed to call an operation (by its OpenAPI
// operationId). A customer is further limited to its own operations, which
// each handler enforces with visible.
func (s *Server) rolesFor(op string) []Role {
	all := []Role{RoleAdmin, RoleOperator, RoleViewer, RoleCustomer}
	actors := []Role{RoleAdmin, RoleOperator}
	switch op {
	case "ListOperations", "GetOperation", "GetOperationHistory", "WhoAmI":
		return all
	case "GetFlags", "GetFlagAudit", "ListProviders", "GetOverview":
		return []Role{RoleAdmin, RoleOperator, RoleViewer}
	case "StartOperation", "RelaunchOperation", "SignalOperation":
		return actors
	case "CancelOperation", "CreateBulkJob", "PauseBulkJob", "ResumeBulkJob", "StopBulkJob", "RetryFailedBulkJob":
		// A customer's bulk job can only cancel (see checkBulkRequest).
		if s.cfg.CustomerMayCancel {
			return append(actors, RoleCustomer)
		}
		return actors
	case "ListBulkJobs", "GetBulkJob", "GetBulkReport":
		return all
	}
	return []Role{RoleAdmin} // tokens, and anything added without a rule
}

// operationIDOf returns the operation a request names, if it names one.
func operationIDOf(request any) (string, bool) {
	switch r := request.(type) {
	case GetOperationRequestObject:
		return r.Id, true
	case GetOperationHistoryRequestObject:
		return r.Id, true
	case CancelOperationRequestObject:
		return r.Id, true
	case RelaunchOperationRequestObject:
		return r.Id, true
	case SignalOperationRequestObject:
		return r.Id, true
	}
	return "", false
}

// bulkJobIDOf returns the bulk job a request names, if it names one.
func bulkJobIDOf(request any) (string, bool) {
	switch r := request.(type) {
	case GetBulkJobRequestObject:
		return r.JobId, true
	case GetBulkReportRequestObject:
		return r.JobId, true
	case PauseBulkJobRequestObject:
		return r.JobId, true
	case ResumeBulkJobRequestObject:
		return r.JobId, true
	case StopBulkJobRequestObject:
		return r.JobId, true
	case RetryFailedBulkJobRequestObject:
		return r.JobId, true
	}
	return "", false
}

// acceptKey holds the request's Accept header in a handler's context.
type acceptKey struct{}

// authorize refuses a call the principal's role may not make. A customer
// asking about an operation it does not own gets 404 whatever it asked,
// exactly as for an operation that does not exist; about its own, 403 when
// the action is not for customers.
func (s *Server) authorize(next StrictHandlerFunc, op string) StrictHandlerFunc {
	return func(ctx context.Context, w http.ResponseWriter, r *http.Request, request any) (any, error) {
		p := principalOf(ctx)
		id, scoped := operationIDOf(request)
		if scoped && p.Role == RoleCustomer {
			ok, err := s.visible(ctx, p, id)
			if err != nil {
				return nil, err
			}
			if !ok {
				return nil, notFound("operation " + quote(id))
			}
		}
		if job, ok := bulkJobIDOf(request); ok && p.Role == RoleCustomer {
			if _, err := s.loadJob(ctx, s.db, p, job, false); err != nil {
				return nil, err
			}
		}
		ctx = context.WithValue(ctx, acceptKey{}, r.Header.Get("Accept"))
		if !slices.Contains(s.rolesFor(op), p.Role) {
			return nil, forbidden("the %s role may not call %s", p.Role, op)
		}
		return next(ctx, w, r, request)
	}
}

// visible reports whether p may see operation id: any operation for staff
// roles, only its own for a customer. An operation that does not exist is
// not visible.
func (s *Server) visible(ctx context.Context, p Principal, id string) (bool, error) {
	if p.Role != RoleCustomer {
		return true, nil
	}
	var ok bool
	err := s.db.GetContext(ctx, &ok, `SELECT EXISTS (SELECT 1 FROM `+s.schema+`.runs
		WHERE workflow_id = $1 AND headers->>`+s.customerKey+` = $2)`, id, p.Customer)
	return ok, err
}
