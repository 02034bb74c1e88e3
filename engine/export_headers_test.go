package engine

// OutboundCallsForTest makes len(out) activity calls through the outbound
// chain of ics in a new live run whose headers are run, as a workflow
// segment does, and stores in out the headers each call goes with. Only the
// chain and the headers are real: nothing is scheduled.
func OutboundCallsForTest(run Headers, ics []Interceptor, out []Headers) error {
	ch, err := buildChains([]string{"ics"}, ics)
	if err != nil {
		return err
	}
	s := &runState{headers: run, ch: &ch, lastRecorded: 1 << 30}
	ctx := &wfContext{s: s}
	for i := range out {
		c := s.outbound(ctx, OutboundActivity, "act", nil)
		if c.refused != nil {
			return c.refused
		}
		out[i] = c.in.Headers
	}
	return nil
}

// MarshalHeadersForTest is marshalHeaders, the encoding of the headers
// column.
func MarshalHeadersForTest(h Headers) []byte { return marshalHeaders(h) }
