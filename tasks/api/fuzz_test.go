package api

import (
	"encoding/json"
	"testing"
)

// FuzzDecodeStrict feeds arbitrary bodies to the strict decoder of every
// request type: it must never panic, must answer a 400 problem for what it
// refuses, and what it accepts must decode (leniently, as the generated
// handler then does) into the same value.
func FuzzDecodeStrict(f *testing.F) {
	for _, seed := range []string{
		`{"reason":"r"}`, `{"reason":"r","force":true}`, `{"reason":1}`, `{`, `null`, `[]`, `"x"`, ``,
		`{"kind":"order","input":{"item":"x"},"id":"a","customer":"c","key":"k"}`,
		`{"name":"confirm","payload":{"approved":true},"reason":"r"}`, `{"name":"confirm","payload":`,
		`{"reason":"r","from_step":"charge","dry_run":true}`, `{"reason":"r","dry_run":"yes"}`,
		`{"name":"n","role":"customer","customer":"c","expires_in_hours":1}`, `{"expires_in_hours":1e400}`,
		`{"reason":"r"} {"reason":"s"}`, `{"action":"signal","filter":{"ids":["a"],"status":["failed"]},"signal":{"name":"n","payload":1},"rate":5,"reason":"r","dry_run":true}`,
		`{"reason":"r","rate":2.5}`, `{"filter":{"created_after":"2026-01-01T00:00:00Z"}}`, "{\"reason\":\"\xff\"}", `{"REASON":"r"}`,
	} {
		f.Add(seed)
	}
	patterns := []string{"POST /v1/operations", "POST /v1/operations/{id}/cancel", "POST /v1/operations/{id}/relaunch",
		"POST /v1/operations/{id}/signal", "POST /v1/tokens", "POST /v1/bulk", "POST /v1/bulk/{jobId}/stop", "POST /v1/bulk/{jobId}/retry-failed"}
	f.Fuzz(func(t *testing.T, body string) {
		for _, p := range patterns {
			v := requestBody(p)
			perr := decodeStrict([]byte(body), v)
			if perr != nil {
				if perr.status != 400 || perr.title == "" || perr.detail == "" {
					t.Fatalf("%s: refusal of %q is not a 400 problem with a detail: %+v", p, body, perr)
				}
				continue
			}
			lenient := requestBody(p)
			if err := json.Unmarshal([]byte(body), lenient); err != nil {
				t.Fatalf("%s: strict decoder accepted %q, which the handler cannot decode: %v", p, body, err)
			}
			a, _ := json.Marshal(v)
			b, _ := json.Marshal(lenient)
			if string(a) != string(b) {
				t.Fatalf("%s: %q decodes differently: strict %s, lenient %s", p, body, a, b)
			}
		}
	})
}
