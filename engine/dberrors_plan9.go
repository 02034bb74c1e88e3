package engine

// isConnErrno is false on Plan 9, whose socket errors are strings without
// errno values; they reach classify as net.Error.
func isConnErrno(error) bool { return false }
