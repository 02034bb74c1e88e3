package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/graftdev/graft/cancel"
	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/typeschema"
)

// checkSignal checks a signal's payload against the type kind declares for
// it (cancel's operator signal for every kind, whose action must also be
// complete: cancel.OperatorAction.Check). A missing payload (null)
// is refused when the type holds a value that null would leave at its zero
// value without saying so: an operator who forgets {"ok":true} must not
// send {"ok":false}. A pointer, an interface or an empty struct takes null.
//
// A kind this server does not register (graft server registers none) is
// checked against the declarations its workers published
// (engine.PublishedSignals): the payload against their JSON Schema, as
// strictly (unknown fields refused, null as above). The error wraps
// engine.ErrUnknownWorkflow (neither registered nor published),
// engine.ErrUnknownSignal or engine.ErrBadInput, and says which.
func (s *Server) checkSignal(ctx context.Context, kind, name string, payload json.RawMessage) error {
	if name == cancel.OperatorSignal {
		if err := checkDecl(operatorSignal(), payload); err != nil {
			return err
		}
		var act cancel.OperatorAction
		if json.Unmarshal(payload, &act) != nil { // no payload: refused above when required
			return nil
		}
		if err := act.Check(); err != nil {
			return &signalError{field: "payload", cause: engine.ErrBadInput, detail: fmt.Sprintf("payload of signal %s: %v", name, err)}
		}
		return nil
	}
	if decls, registered := s.cfg.Engine.WorkflowSignals(kind); registered {
		for _, d := range decls {
			if d.Name == name {
				return checkDecl(d, payload)
			}
		}
		names := make([]string, 0, len(decls))
		for _, d := range decls {
			names = append(names, d.Name)
		}
		return undeclared(kind, name, "", names)
	}
	ks, err := s.publishedSignals(ctx, kind)
	if err != nil {
		return err
	}
	if ks == nil {
		return &signalError{field: "name", cause: engine.ErrUnknownWorkflow, detail: fmt.Sprintf(
			"the kind %q is not registered in this server and its workers published no signal declarations, so its signals cannot be checked", kind)}
	}
	sig, ok := ks.byName[name]
	if !ok {
		names := make([]string, 0, len(ks.pub.Signals))
		for _, d := range ks.pub.Signals {
			names = append(names, d.Name)
		}
		return undeclared(kind, name, "its workers published ", names)
	}
	if err := nullRefused(name, sig.decl.Carries, payload); err != nil || bytes.Equal(bytes.TrimSpace(payload), []byte("null")) {
		return err
	}
	if sig.err != nil {
		return &signalError{field: "payload", cause: engine.ErrBadInput, detail: fmt.Sprintf(
			"the JSON Schema the workers of %q published for signal %q does not compile: %v", kind, name, sig.err)}
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(payload))
	if err != nil {
		return &signalError{field: "payload", cause: engine.ErrBadInput, detail: fmt.Sprintf("payload of signal %s: %v", name, err)}
	}
	if err := sig.schema.Validate(v); err != nil {
		return &signalError{field: "payload", cause: engine.ErrBadInput, detail: fmt.Sprintf("payload of signal %s: %s", name, schemaErrors(err))}
	}
	return nil
}

// checkDecl checks payload by decoding it into d's Go type, and refuses
// null as checkSignal says. A type's own decode (an enumeration's
// UnmarshalText) cannot say where in the payload it refused; when the
// type's JSON Schema refuses the payload with a value outside an
// enumeration, the schema's clauses, which name where, are the error.
func checkDecl(d engine.SignalDecl, payload json.RawMessage) error {
	err := d.Check(payload)
	if err == nil {
		return nullRefused(d.Name, typeschema.Carries(d.Type()), payload)
	}
	if detail := enumRefusal(d.Type(), payload); detail != "" {
		return &signalError{field: "payload", cause: engine.ErrBadInput, detail: fmt.Sprintf("payload of signal %s: %s", d.Name, detail)}
	}
	return err
}

// typeSchemas holds the compiled JSON Schema of each Go type enumRefusal
// has checked a payload against (reflect.Type to *jsonschema.Schema).
var typeSchemas sync.Map

// enumRefusal is where and how payload breaks the JSON Schema of t, when
// one of its mistakes is a value outside an enumeration; "" otherwise.
func enumRefusal(t reflect.Type, payload json.RawMessage) string {
	sch, ok := typeSchemas.Load(t)
	if !ok {
		raw, err := json.Marshal(typeschema.Of(t))
		if err != nil {
			return ""
		}
		c, err := compileSchema(raw)
		if err != nil {
			return ""
		}
		sch, _ = typeSchemas.LoadOrStore(t, c)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(payload))
	if err != nil {
		return ""
	}
	err = sch.(*jsonschema.Schema).Validate(v)
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) || !hasEnumError(ve) {
		return ""
	}
	return schemaErrors(err)
}

func hasEnumError(e *jsonschema.ValidationError) bool {
	if _, ok := e.ErrorKind.(*kind.Enum); ok {
		return true
	}
	return slices.ContainsFunc(e.Causes, hasEnumError)
}

// signalError refuses a signal: the request's field at fault and why. It
// wraps engine.ErrUnknownWorkflow, engine.ErrUnknownSignal or
// engine.ErrBadInput.
type signalError struct {
	field, detail string
	cause         error
}

func (e *signalError) Error() string { return e.detail }
func (e *signalError) Unwrap() error { return e.cause }

// signalRefused says which field of a signal checkSignal refused and why;
// field is "" for an error that is not a refusal (the database failed).
func signalRefused(err error) (field, detail string) {
	var se *signalError
	switch {
	case errors.As(err, &se):
		return se.field, se.detail
	case errors.Is(err, engine.ErrBadInput):
		return "payload", err.Error()
	}
	return "", ""
}

// undeclared is the error refusing signal name, which kind does not
// declare among names.
func undeclared(kind, name, by string, names []string) error {
	list := "none"
	if len(names) > 0 {
		list = strings.Join(names, ", ")
	}
	return &signalError{field: "name", cause: engine.ErrUnknownSignal, detail: fmt.Sprintf(
		"the kind %q declares no signal %q (%sdeclared: %s; and every kind takes %s)", kind, name, by, list, cancel.OperatorSignal)}
}

// nullRefused refuses a payload of null for a signal whose type carries
// something (typeschema.Carries), "" when null is taken.
func nullRefused(name, carries string, payload json.RawMessage) error {
	if carries == "" || !bytes.Equal(bytes.TrimSpace(payload), []byte("null")) {
		return nil
	}
	return &signalError{field: "payload", cause: engine.ErrBadInput, detail: fmt.Sprintf("signal %q carries %s, and none was given", name, carries)}
}

// schemaPrinter writes the schema errors' messages.
var schemaPrinter = message.NewPrinter(language.English)

// schemaErrors says where a payload breaks its schema and how, one clause
// a mistake: "at /approved: got string, want boolean".
func schemaErrors(err error) string {
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return err.Error()
	}
	var out []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			msg := e.ErrorKind.LocalizedString(schemaPrinter)
			if k, ok := e.ErrorKind.(*kind.Enum); ok {
				msg = "got " + jsonText(k.Got) + ", want one of " + jsonList(k.Want)
			}
			out = append(out, fmt.Sprintf("at %s: %s", "/"+strings.Join(e.InstanceLocation, "/"), msg))
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(ve)
	return strings.Join(out, "; ")
}

// jsonText is v as JSON ("retyr" quoted).
func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

// jsonList is vs as JSON, separated by commas.
func jsonList(vs []any) string {
	out := make([]string, len(vs))
	for i, v := range vs {
		out[i] = jsonText(v)
	}
	return strings.Join(out, ", ")
}

// publishedTTL is how long the server keeps a kind's published
// declarations before it reads them again: a bulk job checks every one
// of its operations, and a worker that publishes new ones is seen this
// much later.
const publishedTTL = 2 * time.Second

// publishedKind is a kind's published declarations with their schemas
// compiled.
type publishedKind struct {
	pub    *engine.PublishedSignals
	byName map[string]*publishedSignal
}

type publishedSignal struct {
	decl   engine.PublishedSignal
	schema *jsonschema.Schema
	err    error // the schema did not compile
}

// publishedCache holds the kinds' published declarations read lately.
type publishedCache struct {
	mu    sync.Mutex
	kinds map[string]publishedEntry
}

type publishedEntry struct {
	read time.Time
	kind *publishedKind // nil: none published
}

// publishedSignals returns the declarations kind's workers published,
// nil when none did.
func (s *Server) publishedSignals(ctx context.Context, kind string) (*publishedKind, error) {
	c := &s.published
	c.mu.Lock()
	e, ok := c.kinds[kind]
	c.mu.Unlock()
	if ok && time.Since(e.read) < s.publishedTTL {
		return e.kind, nil
	}
	read := time.Now()
	pub, found, err := s.client.PublishedSignals(ctx, kind)
	if err != nil {
		return nil, err
	}
	var k *publishedKind
	if found {
		k = &publishedKind{pub: pub, byName: map[string]*publishedSignal{}}
		for _, d := range pub.Signals {
			ps := &publishedSignal{decl: d}
			ps.schema, ps.err = compileSchema(d.Schema)
			k.byName[d.Name] = ps
		}
	}
	c.mu.Lock()
	if c.kinds == nil {
		c.kinds = map[string]publishedEntry{}
	}
	c.kinds[kind] = publishedEntry{read: read, kind: k}
	c.mu.Unlock()
	return k, nil
}

// compileSchema compiles a published JSON Schema, asserting formats (a
// time is an RFC 3339 date-time, as time.Time decodes it) and contents
// (a []byte is base64).
func compileSchema(raw json.RawMessage) (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.AssertContent()
	if err := c.AddResource("payload.json", doc); err != nil {
		return nil, err
	}
	return c.Compile("payload.json")
}
