package engine_test

import (
	"encoding/json"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
)

// TestHeadersColumnIsJSONMarshal checks that the headers column is written
// with json.Marshal's bytes, for headers the engine encodes itself and for
// those it hands to json.Marshal (escapes, control characters, HTML
// characters, non-ASCII and invalid UTF-8), and for random ones.
func TestHeadersColumnIsJSONMarshal(t *testing.T) {
	t.Parallel()
	cases := []engine.Headers{
		nil,
		{},
		{"traceparent": clientTraceparent},
		{"traceparent": clientTraceparent, "tracestate": "a=1,b=2", "customer": "c-7"},
		{"z": "", "": "empty key", "a b": "~!@#$%^*()_+{}|:?`-=[];',./"},
		{"quote": `say "hi"`}, {"back": `a\b`}, {"html": "<a href='x'>&amp;</a>"},
		{"ctl": "a\tb\nc\rd\x00e\x1f\x7f"}, {"uni": "héllo, 世界"}, {"sep": "a\u2028b\u2029c"},
		{"bad": "a\xffb\xc3"}, {"\xff": "key"}, {"del": "a\x7fb"},
	}
	for range 500 {
		h := engine.Headers{}
		for range rand.IntN(6) {
			h[randomHeader()] = randomHeader()
		}
		cases = append(cases, h)
	}
	for _, h := range cases {
		want, err := json.Marshal(h)
		require.NoError(t, err)
		require.Equal(t, string(want), string(engine.MarshalHeadersForTest(h)), "headers %q", h)
	}
}

// randomHeader is mostly plain ASCII, sometimes with a character that
// json.Marshal escapes or checks.
func randomHeader() string {
	const plain = "abcXYZ019-_.=,;: /"
	special := []string{`"`, `\`, "<", ">", "&", "\n", "\x01", "é", "\u2028", "\xfe"}
	var b []byte
	for range rand.IntN(12) {
		if rand.IntN(20) == 0 {
			b = append(b, special[rand.IntN(len(special))]...)
		} else {
			b = append(b, plain[rand.IntN(len(plain))])
		}
	}
	return string(b)
}

// TestHeadersColumnAllocatesOnce pins the encoding of plain headers (a
// trace context, a customer ID) to one allocation, the result; through
// json.Marshal one header took four.
func TestHeadersColumnAllocatesOnce(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	h := engine.Headers{"traceparent": clientTraceparent, "customer": "c-7"}
	require.Equal(t, 1.0, testing.AllocsPerRun(100, func() { _ = engine.MarshalHeadersForTest(h) }))
}
