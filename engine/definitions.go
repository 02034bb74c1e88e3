package engine

import (
	"context"
	"fmt"
	"reflect"
)

// Definition is a workflow or activity definition that can be registered.
type Definition interface {
	// Name is the stable name runs and history refer to.
	Name() string
	isDefinition()
}

// Workflow is a typed workflow definition. Create it once with NewWorkflow and
// register it on the engine; its name, not its Go identifier, is what the
// database records, so the function can be renamed freely.
type Workflow[In, Out any] struct {
	name    string
	fn      func(Context, In) (Out, error)
	signals []SignalDecl // WithSignals
}

// NewWorkflow defines a workflow. fn must be deterministic: time, randomness
// and I/O go through ctx helpers and activities.
func NewWorkflow[In, Out any](name string, fn func(Context, In) (Out, error)) *Workflow[In, Out] {
	return &Workflow[In, Out]{name: name, fn: fn}
}

// Name returns the workflow's registered name.
func (w *Workflow[In, Out]) Name() string  { return w.name }
func (w *Workflow[In, Out]) isDefinition() {}

func (w *Workflow[In, Out]) decodeInput(b []byte) (any, error) {
	return decodeInto[In]("input of workflow "+w.name, b, false)
}

func (w *Workflow[In, Out]) decodeInputStrict(b []byte) (any, error) {
	return decodeInto[In]("input of workflow "+w.name, b, true)
}

// inputOf is the workflow's input: live, the value its starter passed in
// this process, when decoding its encoding b would give it back
// (liveValue), and b decoded otherwise.
func (w *Workflow[In, Out]) inputOf(b []byte, live any) (any, error) {
	if v, ok := liveValue[In](live); ok {
		return v, nil
	}
	return w.decodeInput(b)
}

func (w *Workflow[In, Out]) execute(ctx Context, in any) (any, error) {
	v, _ := in.(In)
	return w.fn(ctx, v)
}

// workflowDef is the type-erased view the engine runs.
type workflowDef interface {
	Name() string
	decodeInput([]byte) (any, error)
	decodeInputStrict([]byte) (any, error)
	inputOf(b []byte, live any) (any, error)
	execute(Context, any) (any, error)
}

// Activity is a typed activity definition: ordinary Go code that may do I/O.
// Activities run at least once; use ActivityInfoOf(ctx).IdempotencyKey when they
// touch the outside world.
type Activity[In, Out any] struct {
	name string
	fn   func(context.Context, In) (Out, error)
	opts ActivityOptions
}

// NewActivity defines an activity with default options (see ActivityOptions).
func NewActivity[In, Out any](name string, fn func(context.Context, In) (Out, error)) *Activity[In, Out] {
	return &Activity[In, Out]{name: name, fn: fn}
}

// WithOptions returns a copy of the definition whose calls use opts by default.
func (a *Activity[In, Out]) WithOptions(opts ActivityOptions) *Activity[In, Out] {
	c := *a
	c.opts = opts
	return &c
}

// Name returns the activity's registered name.
func (a *Activity[In, Out]) Name() string  { return a.name }
func (a *Activity[In, Out]) isDefinition() {}

func (a *Activity[In, Out]) decodeInput(b []byte) (any, error) {
	return decodeInto[In]("input of activity "+a.name, b, false)
}

// inputOf is the activity's input for an attempt: live, the value the
// workflow passed, when decoding its encoding b would give it back
// (liveValue), and b decoded otherwise.
func (a *Activity[In, Out]) inputOf(b []byte, live any) (any, error) {
	if v, ok := liveValue[In](live); ok {
		return v, nil
	}
	return a.decodeInput(b)
}

func (a *Activity[In, Out]) execute(ctx context.Context, in any) (any, error) {
	v, _ := in.(In)
	return a.fn(ctx, v)
}

func (a *Activity[In, Out]) defaults() ActivityOptions { return a.opts }

type activityDef interface {
	Name() string
	decodeInput([]byte) (any, error)
	inputOf(b []byte, live any) (any, error)
	execute(context.Context, any) (any, error)
	defaults() ActivityOptions
}

// registry maps names to definitions. It hangs off the Engine; there is no
// package-level registry.
type registry struct {
	workflows  map[string]workflowDef
	activities map[string]activityDef
}

func newRegistry() *registry {
	return &registry{workflows: map[string]workflowDef{}, activities: map[string]activityDef{}}
}

func (r *registry) add(d Definition) error {
	if d == nil || d.Name() == "" {
		return fmt.Errorf("engine: register: definition has no name")
	}
	switch def := d.(type) {
	case workflowDef:
		if old, ok := r.workflows[def.Name()]; ok && old != def {
			return fmt.Errorf("engine: register: workflow %q is already registered", def.Name())
		}
		r.workflows[def.Name()] = def
	case activityDef:
		if old, ok := r.activities[def.Name()]; ok && old != def {
			return fmt.Errorf("engine: register: activity %q is already registered", def.Name())
		}
		r.activities[def.Name()] = def
	default:
		return fmt.Errorf("engine: register: %s is neither a workflow nor an activity", reflect.TypeOf(d))
	}
	return nil
}
