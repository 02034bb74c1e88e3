package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
)

// Sentinel errors returned by the Client and the worker.
var (
	// ErrNotFound means no workflow run matches the given ID.
	ErrNotFound = errors.New("engine: workflow not found")
	// ErrAlreadyStarted means a start was refused by the ID reuse or conflict policy.
	ErrAlreadyStarted = errors.New("engine: workflow already started")
	// ErrUnknownWorkflow means no workflow definition is registered under the name.
	ErrUnknownWorkflow = errors.New("engine: unknown workflow type")
	// ErrUnknownActivity means no activity definition is registered under the name.
	ErrUnknownActivity = errors.New("engine: unknown activity type")
	// ErrUnknownQuery means the workflow registered no handler for the query name.
	ErrUnknownQuery = errors.New("engine: unknown query")
	// ErrPayloadTooLarge means an encoded payload exceeds Config.MaxPayloadBytes.
	ErrPayloadTooLarge = errors.New("engine: payload too large")
	// ErrBadInput means a payload does not decode into the declared type.
	ErrBadInput = errors.New("engine: input does not decode into the declared type")
	// ErrNotRunning means the workflow is closed and cannot take the call (signal, cancel).
	ErrNotRunning = errors.New("engine: workflow is not running")
	// ErrNeedsOperator matches (with errors.Is) every error that stops a run
	// until a person acts: an ApplicationError of type ErrorTypeNeedsOperator,
	// made with NewNeedsOperatorError, also after it was read back from the
	// database. The sync package shows such a run as needing an operator;
	// the cancel package fails with one when a compensation gives up.
	ErrNeedsOperator = errors.New("engine: needs an operator")
	// errLeaseLost is internal: this worker no longer owns the run it tried to write.
	errLeaseLost = errors.New("engine: lease lost")
)

// ApplicationError types the engine and graft's packages give the errors they
// raise inside a run. The error is persisted by its type, so ApplicationError.Is
// maps each type to its sentinel here, in one place, and errors.Is works after
// the round trip through the database.
const (
	// ErrorTypePayloadTooLarge matches ErrPayloadTooLarge.
	ErrorTypePayloadTooLarge = "PayloadTooLarge"
	// ErrorTypeBadInput matches ErrBadInput.
	ErrorTypeBadInput = "BadInput"
	// ErrorTypeUnknownActivity matches ErrUnknownActivity.
	ErrorTypeUnknownActivity = "UnknownActivity"
	// ErrorTypeUnknownWorkflow matches ErrUnknownWorkflow.
	ErrorTypeUnknownWorkflow = "UnknownWorkflow"
	// ErrorTypeChildAlreadyStarted matches ErrAlreadyStarted: a child
	// workflow's ID was in use.
	ErrorTypeChildAlreadyStarted = "ChildAlreadyStarted"
	// ErrorTypeNeedsOperator matches ErrNeedsOperator.
	ErrorTypeNeedsOperator = "NeedsOperator"
	// ErrorTypeHistoryLimitExceeded fails a run whose record outgrew
	// Config.HistoryCountLimit or Config.HistorySizeLimit.
	ErrorTypeHistoryLimitExceeded = "HistoryLimitExceeded"
	// ErrorTypeCheckpointRefused is the type of an activity attempt's
	// error when a checkpoint interceptor refused the record of its
	// outcome; its Message is the interceptor's error.
	ErrorTypeCheckpointRefused = "CheckpointRefused"
	// ErrorTypeUndecodable is the type of an error whose record could not
	// be decoded; its Message holds the record.
	ErrorTypeUndecodable = "undecodable"
)

// NewNeedsOperatorError returns a non-retryable ApplicationError of type
// ErrorTypeNeedsOperator: the run cannot go on until a person acts (details,
// as JSON, say what on).
func NewNeedsOperatorError(msg string, details any) *ApplicationError {
	return NewNonRetryableError(ErrorTypeNeedsOperator, msg, details)
}

// ApplicationError is a failure raised by workflow or activity code. It survives
// persistence: after a replay, errors.As still finds it with the same fields.
type ApplicationError struct {
	// Type classifies the error; retry policies match NonRetryableErrorTypes on it.
	Type string
	// Message is the human-readable text.
	Message string
	// NonRetryable stops activity retries at once.
	NonRetryable bool
	// Details carries JSON the raiser attached.
	Details json.RawMessage
	// Cause is the wrapped error, also persisted.
	Cause error
}

// NewApplicationError returns a retryable ApplicationError of the given type.
func NewApplicationError(typ, msg string, details any) *ApplicationError {
	e := &ApplicationError{Type: typ, Message: msg}
	if details != nil {
		e.Details, _ = json.Marshal(details)
	}
	return e
}

// NewNonRetryableError returns an ApplicationError that stops retries.
func NewNonRetryableError(typ, msg string, details any) *ApplicationError {
	e := NewApplicationError(typ, msg, details)
	e.NonRetryable = true
	return e
}

func (e *ApplicationError) Error() string {
	if e.Type != "" {
		return e.Type + ": " + e.Message
	}
	return e.Message
}

// Unwrap returns the cause.
func (e *ApplicationError) Unwrap() error { return e.Cause }

// Is lets errors.Is match the engine's sentinels on the ApplicationErrors
// raised inside a run (an oversized payload, input that does not decode, an
// unregistered activity or child workflow, a child ID in use, a run that
// needs an operator): see the ErrorType constants.
func (e *ApplicationError) Is(target error) bool {
	switch e.Type {
	case ErrorTypePayloadTooLarge:
		return target == ErrPayloadTooLarge
	case ErrorTypeBadInput:
		return target == ErrBadInput
	case ErrorTypeUnknownActivity:
		return target == ErrUnknownActivity
	case ErrorTypeUnknownWorkflow:
		return target == ErrUnknownWorkflow
	case ErrorTypeChildAlreadyStarted:
		return target == ErrAlreadyStarted
	case ErrorTypeNeedsOperator:
		return target == ErrNeedsOperator
	}
	return false
}

// TimeoutKind says which timeout fired.
type TimeoutKind string

// Timeout kinds.
const (
	TimeoutStartToClose    TimeoutKind = "start_to_close"
	TimeoutScheduleToClose TimeoutKind = "schedule_to_close"
	TimeoutHeartbeat       TimeoutKind = "heartbeat"
)

// TimeoutError reports an activity timeout. HeartbeatDetails holds the last
// details the activity recorded, so a retry can resume from them.
type TimeoutError struct {
	Kind             TimeoutKind
	HeartbeatDetails json.RawMessage
}

func (e *TimeoutError) Error() string { return "activity timeout (" + string(e.Kind) + ")" }

// CanceledError reports that the workflow or activity was cancelled.
type CanceledError struct{ Reason string }

func (e *CanceledError) Error() string {
	if e.Reason == "" {
		return "canceled"
	}
	return "canceled: " + e.Reason
}

// Is lets errors.Is(err, context.Canceled)-style checks treat all CanceledErrors alike.
func (e *CanceledError) Is(target error) bool {
	_, ok := target.(*CanceledError)
	return ok
}

// NonDeterminismError means a replay asked for a different step than the record holds.
type NonDeterminismError struct {
	Seq       int
	Recorded  string
	Requested string
}

func (e *NonDeterminismError) Error() string {
	return fmt.Sprintf("non-determinism at step %d: history has %s, workflow asked for %s", e.Seq, e.Recorded, e.Requested)
}

// PanicError is a recovered panic with its stack.
type PanicError struct {
	Value string
	Stack string
}

func (e *PanicError) Error() string { return "panic: " + e.Value }

// errorRecord is the persisted form of an error chain.
type errorRecord struct {
	Kind         string          `json:"kind"`
	Type         string          `json:"type,omitempty"`
	Message      string          `json:"message"`
	NonRetryable bool            `json:"non_retryable,omitempty"`
	Details      json.RawMessage `json:"details,omitempty"`
	Stack        string          `json:"stack,omitempty"`
	Seq          int             `json:"seq,omitempty"`
	Cause        *errorRecord    `json:"cause,omitempty"`
}

// encodeError turns any error into its persisted JSON form.
func encodeError(err error) []byte {
	if err == nil {
		return nil
	}
	b, _ := json.Marshal(toRecord(err))
	return b
}

func toRecord(err error) *errorRecord {
	if err == nil {
		return nil
	}
	var (
		app *ApplicationError
		to  *TimeoutError
		ca  *CanceledError
		nd  *NonDeterminismError
		pe  *PanicError
	)
	switch {
	case errors.As(err, &app):
		return &errorRecord{Kind: "application", Type: app.Type, Message: app.Message, NonRetryable: app.NonRetryable, Details: app.Details, Cause: toRecord(app.Cause)}
	case errors.As(err, &to):
		return &errorRecord{Kind: "timeout", Type: string(to.Kind), Message: to.Error(), Details: to.HeartbeatDetails}
	case errors.As(err, &ca):
		return &errorRecord{Kind: "canceled", Message: ca.Reason}
	case errors.As(err, &nd):
		return &errorRecord{Kind: "nondeterminism", Type: nd.Recorded, Message: nd.Requested, Seq: nd.Seq, NonRetryable: true}
	case errors.As(err, &pe):
		return &errorRecord{Kind: "panic", Message: pe.Value, Stack: pe.Stack}
	}
	return &errorRecord{Kind: "application", Type: ErrorTypeOf(err), Message: err.Error(), Cause: toRecord(errors.Unwrap(err))}
}

// ErrorTypeUntyped is the type ErrorTypeOf gives an error chain with no
// type of its own: errors.New and fmt.Errorf all the way down.
const ErrorTypeUntyped = "Error"

// ErrorTypeOf returns the type an error is recorded with, which retry
// policies match against NonRetryableErrorTypes and which an
// *ApplicationError carries after the error was read back: an
// ApplicationError's Type when the chain holds one, else the name (without
// package) of the outermost error type in the chain that is not one of
// the standard library's anonymous wrappers (errors.New, fmt.Errorf,
// errors.Join), searched in the order errors.As searches, so fmt.Errorf("charge: %w", &CardDeclinedError{}) is of type
// "CardDeclinedError"; else ErrorTypeUntyped. A sentinel made with
// errors.New has no type of its own: give it one with NewApplicationError
// or NewNonRetryableError, or declare an error type.
func ErrorTypeOf(err error) string {
	if err == nil {
		return ""
	}
	var app *ApplicationError
	if errors.As(err, &app) {
		return app.Type
	}
	if name := namedErrorType(err); name != "" {
		return name
	}
	return ErrorTypeUntyped
}

// namedErrorType searches err's tree depth first, as errors.As does, for a
// type that is not one of the standard library's anonymous wrappers.
func namedErrorType(err error) string {
	if err == nil {
		return ""
	}
	t := reflect.TypeOf(err)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if pkg := t.PkgPath(); t.Name() != "" && pkg != "errors" && pkg != "fmt" {
		return t.Name()
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return namedErrorType(u.Unwrap())
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if name := namedErrorType(e); name != "" {
				return name
			}
		}
	}
	return ""
}

// decodeError rebuilds the typed error from its persisted form.
func decodeError(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	var r errorRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return &ApplicationError{Type: ErrorTypeUndecodable, Message: string(b)}
	}
	return fromRecord(&r)
}

func fromRecord(r *errorRecord) error {
	if r == nil {
		return nil
	}
	switch r.Kind {
	case "timeout":
		return &TimeoutError{Kind: TimeoutKind(r.Type), HeartbeatDetails: r.Details}
	case "canceled":
		return &CanceledError{Reason: r.Message}
	case "nondeterminism":
		return &NonDeterminismError{Seq: r.Seq, Recorded: r.Type, Requested: r.Message}
	case "panic":
		return &PanicError{Value: r.Message, Stack: r.Stack}
	}
	return &ApplicationError{Type: r.Type, Message: r.Message, NonRetryable: r.NonRetryable, Details: r.Details, Cause: fromRecord(r.Cause)}
}

// isCanceled reports whether err is a cancellation.
func isCanceled(err error) bool {
	var ca *CanceledError
	return errors.As(err, &ca)
}
