package engine

import (
	"encoding/json"
	"fmt"
)

// encodePayload marshals v as JSON and enforces the size limit. what names
// the payload in the error ("input of workflow renew", ...).
func (e *Engine) encodePayload(what string, v any) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("engine: encode %s: %w", what, err)
	}
	if e.cfg.MaxPayloadBytes > 0 && len(b) > e.cfg.MaxPayloadBytes {
		return nil, fmt.Errorf("%w: %s is %d bytes, limit is %d", ErrPayloadTooLarge, what, len(b), e.cfg.MaxPayloadBytes)
	}
	return b, nil
}

// decodeInto unmarshals b into a new T. Strict decoding (for input from
// outside, such as an HTTP API) rejects unknown fields and trailing data, so
// a misspelled field is an error rather than a silent zero value; payloads
// graft encoded itself are decoded leniently, which is cheaper and lets a
// type drop a field without breaking recorded runs.
func decodeInto[T any](what string, b []byte, strict bool) (T, error) {
	var v T
	if len(b) == 0 || string(b) == "null" {
		return v, nil
	}
	var err error
	if strict {
		err = strictUnmarshal(b, &v)
	} else {
		err = json.Unmarshal(b, &v)
	}
	if err != nil {
		return v, fmt.Errorf("%w: %s: %v", ErrBadInput, what, err)
	}
	return v, nil
}
