package engine

import (
	"slices"
	"unicode/utf8"
)

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

// marshalHeaders returns json.Marshal(h) (null for nil; keys in sorted
// order), made without reflection: one allocation instead of four for the
// run's headers written with every start and child start (a trace context
// at least, with a tracing interceptor). Headers with any character that
// json.Marshal escapes or checks (a quote, a backslash, <, >, &, a control
// character or a byte past ASCII) go through json.Marshal itself.
func marshalHeaders(h Headers) []byte {
	if h == nil {
		return []byte("null")
	}
	var room [8]string // the keys of most runs, on the stack
	keys := room[:0]
	n := 2
	for k, v := range h {
		if !plainJSON(k) || !plainJSON(v) {
			return mustJSON(h)
		}
		keys = append(keys, k)
		n += len(k) + len(v) + len(`"":"",`)
	}
	slices.Sort(keys)
	b := make([]byte, 0, n)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '"')
		b = append(b, k...)
		b = append(b, `":"`...)
		b = append(b, h[k]...)
		b = append(b, '"')
	}
	return append(b, '}')
}

// plainJSON reports whether json.Marshal writes s as it is between quotes.
func plainJSON(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20, c >= utf8.RuneSelf, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}
