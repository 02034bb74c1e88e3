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
		return nil, fmt.Errorf("graft: encode %s: %w", what, err)
	}
	if e.cfg.MaxPayloadBytes > 0 && len(b) > e.cfg.MaxPayloadBytes {
		return nil, fmt.Errorf("%w: %s is %d bytes, limit is %d", ErrPayloadTooLarge, what, len(b), e.cfg.MaxPayloadBytes)
	}
	return b, nil
}

// decodeInto unmarshals b into a new T, strictly: unknown fields are rejected
// so a misspelled field is an error rather than a silent zero value.
func decodeInto[T any](what string, b []byte) (T, error) {
	var v T
	if len(b) == 0 || string(b) == "null" {
		return v, nil
	}
	if err := strictUnmarshal(b, &v); err != nil {
		return v, fmt.Errorf("%w: %s: %v", ErrBadInput, what, err)
	}
	return v, nil
}
