package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"

	"github.com/graftdev/graft/cancel"
	"github.com/graftdev/graft/engine"
)

// checkSignal checks a signal's payload against the type kind declares for
// it (cancel's operator signal for every kind). A missing payload (null)
// is refused when the type holds a value that null would leave at its zero
// value without saying so: an operator who forgets {"ok":true} must not
// send {"ok":false}. A pointer, an interface or an empty struct takes null.
func (s *Server) checkSignal(kind, name string, payload json.RawMessage) error {
	decl := operatorSignal()
	if name != cancel.OperatorSignal {
		if err := s.cfg.Engine.CheckSignal(kind, name, payload); err != nil {
			return err
		}
		decls, _ := s.cfg.Engine.WorkflowSignals(kind)
		for _, d := range decls {
			if d.Name == name {
				decl = d
			}
		}
	} else if err := decl.Check(payload); err != nil {
		return err
	}
	if !bytes.Equal(bytes.TrimSpace(payload), []byte("null")) {
		return nil
	}
	if want := payloadShape(decl.Type()); want != "" {
		return fmt.Errorf("%w: signal %q carries %s, and none was given", engine.ErrBadInput, name, want)
	}
	return nil
}

// payloadShape says what JSON a value of t is written as, or "" when null
// means something of its own for t (a pointer, an interface, a struct
// without fields).
func payloadShape(t reflect.Type) string {
	if t == nil {
		return ""
	}
	switch t.Kind() {
	case reflect.Pointer, reflect.Interface:
		return ""
	case reflect.Struct:
		if t.NumField() == 0 {
			return ""
		}
		return "a JSON object"
	case reflect.Map:
		return "a JSON object"
	case reflect.Slice, reflect.Array:
		return "a JSON array"
	case reflect.String:
		return "a JSON string"
	case reflect.Bool:
		return "true or false"
	default:
		return "a JSON number"
	}
}
