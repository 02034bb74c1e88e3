package api

import (
	"bytes"
	"encoding/json"
)

// LegacyRow is an operation's legacy row: every column by name, as
// PostgreSQL's to_jsonb renders it. Its numbers decode as json.Number, so a
// bigint beyond 2^53 (which a float64 would round) survives a round trip
// through the API: the server writes it exactly and the generated client,
// the CLI and the web UI read it exactly.
type LegacyRow map[string]any

// UnmarshalJSON decodes a row with its numbers as json.Number, nested
// values (a jsonb column) included.
func (r *LegacyRow) UnmarshalJSON(b []byte) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return err
	}
	*r = m
	return nil
}
