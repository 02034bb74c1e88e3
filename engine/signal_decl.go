package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
)

// ErrUnknownSignal means a workflow declares no signal of the name sent.
var ErrUnknownSignal = errors.New("engine: signal not declared by the workflow")

// SignalDecl declares a signal a workflow reads and the type of its payload,
// so that code outside the workflow (an HTTP API, a CLI) can list the
// signals and refuse a payload that would not decode before it is sent.
// Declarations describe; they do not restrict Client.Signal, which sends any
// name (a workflow may read a signal it did not declare). A worker
// publishes the declarations of its workflow types when it starts, for the
// processes that do not register them (Client.PublishedSignals).
type SignalDecl struct {
	// Name is the signal's name, as given to GetSignalChannel.
	Name string
	// Description says what the signal does, for people.
	Description string
	typ         reflect.Type
	check       func([]byte) error
}

// DeclareSignal declares a signal whose payload is a T, as read by
// GetSignalChannel[T](ctx, name).
func DeclareSignal[T any](name, description string) SignalDecl {
	return SignalDecl{Name: name, Description: description, typ: reflect.TypeFor[T](),
		check: func(b []byte) error {
			_, err := decodeInto[T]("payload of signal "+name, b, true)
			return err
		}}
}

// Type is the payload's Go type.
func (d SignalDecl) Type() reflect.Type { return d.typ }

// Check decodes payload strictly (unknown fields and trailing data refused)
// into the declared type; the error wraps ErrBadInput and says why.
func (d SignalDecl) Check(payload json.RawMessage) error {
	if d.check == nil {
		return fmt.Errorf("engine: signal %q was not declared with DeclareSignal", d.Name)
	}
	return d.check(payload)
}

// WithSignals returns a copy of the definition that declares signals.
func (w *Workflow[In, Out]) WithSignals(signals ...SignalDecl) *Workflow[In, Out] {
	c := *w
	c.signals = append(append([]SignalDecl(nil), w.signals...), signals...)
	return &c
}

// Signals returns the signals the definition declares.
func (w *Workflow[In, Out]) Signals() []SignalDecl { return append([]SignalDecl(nil), w.signals...) }

// WorkflowSignals returns the signals a registered workflow type declares;
// registered is false when no workflow of the name is registered on e.
func (e *Engine) WorkflowSignals(workflowType string) (signals []SignalDecl, registered bool) {
	def := e.reg.workflows[workflowType]
	if def == nil {
		return nil, false
	}
	if d, ok := def.(interface{ Signals() []SignalDecl }); ok {
		return d.Signals(), true
	}
	return nil, true
}

// CheckSignal checks that a registered workflow type declares a signal and
// that payload decodes into its type. The error wraps ErrUnknownWorkflow,
// ErrUnknownSignal or ErrBadInput.
func (e *Engine) CheckSignal(workflowType, name string, payload json.RawMessage) error {
	sigs, ok := e.WorkflowSignals(workflowType)
	if !ok {
		return fmt.Errorf("%w: %q is not registered in this process", ErrUnknownWorkflow, workflowType)
	}
	for _, d := range sigs {
		if d.Name == name {
			return d.Check(payload)
		}
	}
	return fmt.Errorf("%w: %q declares no signal %q", ErrUnknownSignal, workflowType, name)
}
