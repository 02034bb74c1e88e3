package graftsync

import "fmt"

// MissingRowErrorType is the ApplicationError type of the activity failure
// that MissingFail raises when a workflow's row is gone.
const MissingRowErrorType = "LegacyRowMissing"

// MissingRowError reports that a workflow's legacy row does not exist under
// the MissingFail policy. A refused start returns it (wrapped).
type MissingRowError struct {
	Table      string
	Key        string
	WorkflowID string
}

func (e *MissingRowError) Error() string {
	return fmt.Sprintf("graftsync: legacy row %s %q of workflow %q does not exist (missing_row: fail)", e.Table, e.Key, e.WorkflowID)
}
