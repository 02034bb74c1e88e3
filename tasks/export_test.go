package tasks

// SetBeforeCommitHookForTest makes in call f just before each claim
// transaction commits, with the number of rows it started, so a test can
// park an intake inside the transaction (f blocks) and kill its process.
func SetBeforeCommitHookForTest(in *Intake, f func(started int)) { in.beforeCommit = f }
