package engine

// callHeaders hands out the headers of a run's outbound calls without a
// copy per call. Each call's interceptors get a map of their own to write
// into (OutboundInput.Headers may be changed in place): spare, a copy of
// the run's headers made once and lent again while no interceptor writes
// into it. After the chain the call takes the run's headers when its
// headers are still those, the previous call's when they equal those (a
// tracing interceptor writes the same span context into every call of a
// segment), and only otherwise a map of its own (the spare, which is then
// the call's). What the calls take is shared by reference and read only.
// It is used on the workflow's goroutine alone.
type callHeaders struct {
	spare Headers
	last  Headers // the headers of the last call that took a map of its own
}

// lend returns the map a call's outbound chain gets: run itself when there
// is no interceptor to write into it.
func (c *callHeaders) lend(run Headers, interceptors int) Headers {
	if interceptors == 0 {
		return run
	}
	if c.spare == nil {
		c.spare = run.Clone()
	}
	return c.spare
}

// settle returns the headers the call goes with, h being what the chain
// left in its input (the spare lent, or a map an interceptor put instead).
func (c *callHeaders) settle(run, h Headers, interceptors int) Headers {
	if interceptors == 0 {
		return h
	}
	spareClean := headersEqual(c.spare, run)
	switch {
	case spareClean && headersEqual(h, run):
		return run
	case spareClean:
		return h // an interceptor's map: h is not the spare, which is run's copy
	case c.last != nil && headersEqual(h, c.last):
		clear(c.spare)
		for k, v := range run {
			c.spare[k] = v
		}
		return c.last
	default:
		// h is the spare, written into (or the spare was written into and
		// then replaced): the call keeps it, the next call gets a new one.
		c.spare, c.last = nil, h
		return h
	}
}

// headersEqual says whether a and b hold the same keys and values.
func headersEqual(a, b Headers) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
