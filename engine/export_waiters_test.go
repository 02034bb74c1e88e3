package engine

// WaiterCountForTest returns how many result waiters the engine holds, so
// external tests can check that waiting costs no memory once it is over.
func WaiterCountForTest(e *Engine) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, ws := range e.waiters {
		n += len(ws)
	}
	return n
}
