package graftsync

import (
	"fmt"
	"sort"
	"strings"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/pgident"
	"github.com/graftdev/graft/internal/strictdecode"
)

// State is a workflow's state as the mirror shows it. Status.Values maps
// each State to the legacy table's vocabulary.
type State string

// States.
const (
	StatePending   State = "pending"
	StateRunning   State = "running"
	StateWaiting   State = "waiting"
	StateCompleted State = "completed"
	StateFailed    State = "failed"
	StateCancelled State = "cancelled"
	// StateNeedsOperator: the workflow is stuck until a person acts (see
	// engine.NewNeedsOperatorError).
	StateNeedsOperator State = "needs_operator"
)

// States lists every State, in the order of a workflow's life.
var States = []State{StatePending, StateRunning, StateWaiting, StateCompleted, StateFailed, StateCancelled, StateNeedsOperator}

// closed reports whether a run in this state has ended for good.
func (s State) closed() bool {
	return s == StateCompleted || s == StateFailed || s == StateCancelled
}

func (s State) valid() bool {
	for _, x := range States {
		if s == x {
			return true
		}
	}
	return false
}

// KeySource says where a workflow's row key comes from.
type KeySource string

// Key sources.
const (
	// FromWorkflowID uses the workflow ID as the key (the usual case: the
	// workflow ID is the operation ID).
	FromWorkflowID KeySource = "workflow_id"
	// FromHeader uses the header Key.Name.
	FromHeader KeySource = "header"
	// FromInput uses the field Key.Name (a dotted path, such as
	// "operation.id") of the workflow input's JSON.
	FromInput KeySource = "input"
)

// Key says which row a workflow mirrors into.
type Key struct {
	// Column is the legacy table's key column; it should be unique. Required.
	Column string `json:"column" yaml:"column"`
	// From is where the key comes from. Default FromWorkflowID.
	From KeySource `json:"from,omitempty" yaml:"from,omitempty"`
	// Name is the header name (FromHeader) or the input field's dotted path
	// (FromInput).
	Name string `json:"name,omitempty" yaml:"name,omitempty"`
}

// MissingRowPolicy says what to do when a workflow's row does not exist.
type MissingRowPolicy string

// Missing row policies.
const (
	// MissingSkip writes nothing and logs a warning (default).
	MissingSkip MissingRowPolicy = "skip"
	// MissingCreate inserts the row.
	MissingCreate MissingRowPolicy = "create"
	// MissingFail refuses the workflow with a *MissingRowError: its start
	// is refused, and an activity attempt whose row is gone fails
	// non-retryably.
	MissingFail MissingRowPolicy = "fail"
)

// StatusColumn receives the workflow's state in the legacy vocabulary.
type StatusColumn struct {
	// Column is the status column (text, varchar or an enum). Required.
	Column string `json:"column" yaml:"column"`
	// Values maps graft's states to legacy values; a state without a value
	// leaves the column as it is.
	Values map[State]string `json:"values" yaml:"values"`
}

// StepColumn receives the latest activity to reach a checkpoint.
type StepColumn struct {
	// Column is the step column (text, varchar or an enum). Required.
	Column string `json:"column" yaml:"column"`
	// Labels maps activity names to legacy step labels. An activity without
	// a label leaves the column as it is; with no labels at all, the
	// activity's name is written.
	Labels map[string]string `json:"labels,omitempty" yaml:"labels,omitempty"`
}

// ErrorColumn receives the last error message (an activity's final failure,
// the workflow's failure or its cancellation reason).
type ErrorColumn struct {
	// Column is the error or comment column (text or varchar). Required.
	Column string `json:"column" yaml:"column"`
	// ClearOnSuccess sets the column to NULL when the workflow starts, an
	// activity completes or the workflow completes.
	ClearOnSuccess bool `json:"clear_on_success,omitempty" yaml:"clear_on_success,omitempty"`
}

// ProgressColumn receives a progress value (a number).
type ProgressColumn struct {
	// Column is the progress column (a numeric type). Required.
	Column string `json:"column" yaml:"column"`
	// Activities maps activity names to the progress once they complete.
	Activities map[string]float64 `json:"activities,omitempty" yaml:"activities,omitempty"`
	// Completed, when set, is the progress once the workflow completes.
	Completed *float64 `json:"completed,omitempty" yaml:"completed,omitempty"`
}

// ExtraFunc computes an extra column's value from a completed activity's
// checkpoint (ev.Result is the activity's result, ev.Input its input). A nil
// value leaves the column as it is. A time.Time suits date and timestamp
// columns; numbers, strings and booleans suit the matching types; any other
// value is written as JSON. An error leaves the column as it is and is logged:
// a mirror write must not block the workflow.
type ExtraFunc func(ev *engine.CheckpointEvent) (any, error)

// ExtraColumn is a column computed from an activity's result, such as a
// renewal's new expiry date. Set exactly one of Field, Func and Compute.
type ExtraColumn struct {
	// Column is the legacy column. Required.
	Column string `json:"column" yaml:"column"`
	// Activity is the activity whose completion sets the column. Required.
	Activity string `json:"activity" yaml:"activity"`
	// Field is a dotted path into the result's JSON, such as "expires_at".
	Field string `json:"field,omitempty" yaml:"field,omitempty"`
	// Func names a function in Config.Funcs (the way a YAML or JSON mapping
	// refers to Go code).
	Func string `json:"func,omitempty" yaml:"func,omitempty"`
	// Compute is the function itself, for mappings declared in Go.
	Compute ExtraFunc `json:"-" yaml:"-"`
}

// Action is what a request value asks graft to do. Set exactly one of
// Cancel and Signal.
type Action struct {
	// Cancel cancels the workflow.
	Cancel bool `json:"cancel,omitempty" yaml:"cancel,omitempty"`
	// Signal sends the named signal; its payload is a Request.
	Signal string `json:"signal,omitempty" yaml:"signal,omitempty"`
	// Reason is the cancellation reason. Default "requested in <table>".
	Reason string `json:"reason,omitempty" yaml:"reason,omitempty"`
	// Ack is written over the request value once graft has acted. Default:
	// the status value of the run's current state (which then needs
	// Status.Values to cover every state).
	Ack string `json:"ack,omitempty" yaml:"ack,omitempty"`
}

// Actions are requests the legacy side makes by writing a value into a
// column (see the package documentation).
type Actions struct {
	// Column holds the requests. Default: the status column.
	Column string `json:"column,omitempty" yaml:"column,omitempty"`
	// On maps request values to actions.
	On map[string]Action `json:"on" yaml:"on"`
}

// Mapping declares how workflows are mirrored into one legacy table.
type Mapping struct {
	// Table is the legacy table, "schema.table" (or "table" in public).
	// Required.
	Table string `json:"table" yaml:"table"`
	// Workflows restricts the mirror to these workflow types. Default: all.
	Workflows []string `json:"workflows,omitempty" yaml:"workflows,omitempty"`
	// Key says which row a workflow mirrors into. Key.Column is required.
	Key Key `json:"key" yaml:"key"`
	// Status, when set, receives the workflow's state.
	Status *StatusColumn `json:"status,omitempty" yaml:"status,omitempty"`
	// Step, when set, receives the latest activity's label.
	Step *StepColumn `json:"step,omitempty" yaml:"step,omitempty"`
	// Error, when set, receives the last error message.
	Error *ErrorColumn `json:"error,omitempty" yaml:"error,omitempty"`
	// Attempts, when set, names an integer column that receives the attempts
	// the latest activity took.
	Attempts string `json:"attempts,omitempty" yaml:"attempts,omitempty"`
	// UpdatedAt, when set, names a timestamp column that receives the time of
	// the latest change (a change that alters no other mapped column is not
	// written at all).
	UpdatedAt string `json:"updated_at,omitempty" yaml:"updated_at,omitempty"`
	// Progress, when set, receives a progress value.
	Progress *ProgressColumn `json:"progress,omitempty" yaml:"progress,omitempty"`
	// Extra columns are computed from activity results.
	Extra []ExtraColumn `json:"extra,omitempty" yaml:"extra,omitempty"`
	// Version, when set, names a bigint (or numeric) column that receives
	// each change's position and must be below it for the change to apply.
	// It is then the never-regress guard, and graft keeps no mirror_state
	// (see the package documentation for what that trades).
	Version string `json:"version,omitempty" yaml:"version,omitempty"`
	// MissingRow says what to do when the row does not exist. Default
	// MissingSkip.
	MissingRow MissingRowPolicy `json:"missing_row,omitempty" yaml:"missing_row,omitempty"`
	// Actions, when set, turns legacy-side requests into cancellations and
	// signals.
	Actions *Actions `json:"actions,omitempty" yaml:"actions,omitempty"`
	// NeedsOperator decides which errors put a workflow in
	// StateNeedsOperator. Default: errors.Is(err, engine.ErrNeedsOperator).
	NeedsOperator func(err error) bool `json:"-" yaml:"-"`
}

// Validate checks the mapping's shape without a database: required fields,
// identifiers, known states and policies. New also checks it against the
// table. Errors name a field as a YAML or JSON mapping spells it
// (status.column, extra[0].field, status.values.running), which is also
// the Go field's path (Status.Column, Extra[0].Field,
// Status.Values["running"]); fields that only Go has keep Go's name
// (Compute).
func (m *Mapping) Validate() error {
	if _, err := parseTable(m.Table); err != nil {
		return fmt.Errorf("graftsync: mapping: table: %w", err)
	}
	p := fieldPrefix(m.Table)
	col := func(field, name string) error {
		if name == "" {
			return fmt.Errorf("%s%s is required", p, field)
		}
		if !pgident.Valid(name) {
			return fmt.Errorf("%s%s %q is not a valid column name", p, field, name)
		}
		return nil
	}
	if err := col("key.column", m.Key.Column); err != nil {
		return err
	}
	switch m.Key.From {
	case "", FromWorkflowID:
		if m.Key.Name != "" {
			return fmt.Errorf("%skey.name is set but key.from is %q", p, FromWorkflowID)
		}
	case FromHeader, FromInput:
		if m.Key.Name == "" {
			return fmt.Errorf("%skey.name is required when key.from is %q", p, m.Key.From)
		}
	default:
		return fmt.Errorf("%skey.from %q is not one of workflow_id, header, input", p, m.Key.From)
	}
	if m.Key.From == FromInput {
		if err := checkPath(m.Key.Name); err != nil {
			return fmt.Errorf("%skey.name: %w", p, err)
		}
	}
	seen := map[string]string{m.Key.Column: "key.column"}
	use := func(field, name string) error {
		if err := col(field, name); err != nil {
			return err
		}
		if other, ok := seen[name]; ok {
			return fmt.Errorf("%s%s %q is also %s", p, field, name, other)
		}
		seen[name] = field
		return nil
	}
	if s := m.Status; s != nil {
		if err := use("status.column", s.Column); err != nil {
			return err
		}
		for _, st := range sortedStates(s.Values) {
			if !st.valid() {
				return fmt.Errorf("%sstatus.values: %q is not a state (want one of %s)", p, st, stateList())
			}
			if s.Values[st] == "" {
				return fmt.Errorf("%s%s is empty", p, strictdecode.Join("status.values", string(st)))
			}
		}
	}
	if s := m.Step; s != nil {
		if err := use("step.column", s.Column); err != nil {
			return err
		}
		for _, a := range sortedKeys(s.Labels) {
			if s.Labels[a] == "" {
				return fmt.Errorf("%s%s is empty", p, strictdecode.Join("step.labels", a))
			}
		}
	}
	if m.Error != nil {
		if err := use("error.column", m.Error.Column); err != nil {
			return err
		}
	}
	if m.Attempts != "" {
		if err := use("attempts", m.Attempts); err != nil {
			return err
		}
	}
	if m.UpdatedAt != "" {
		if err := use("updated_at", m.UpdatedAt); err != nil {
			return err
		}
	}
	if m.Progress != nil {
		if err := use("progress.column", m.Progress.Column); err != nil {
			return err
		}
	}
	for i, x := range m.Extra {
		f := fmt.Sprintf("extra[%d]", i)
		if err := use(f+".column", x.Column); err != nil {
			return err
		}
		if x.Activity == "" {
			return fmt.Errorf("%s%s.activity is required", p, f)
		}
		n := 0
		for _, set := range []bool{x.Field != "", x.Func != "", x.Compute != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			return fmt.Errorf("%s%s (column %q): set exactly one of field, func and Compute", p, f, x.Column)
		}
		if x.Field != "" {
			if err := checkPath(x.Field); err != nil {
				return fmt.Errorf("%s%s.field: %w", p, f, err)
			}
		}
	}
	if m.Version != "" {
		if err := use("version", m.Version); err != nil {
			return err
		}
	}
	if m.Status == nil && m.Step == nil && m.Error == nil && m.Attempts == "" && m.UpdatedAt == "" &&
		m.Progress == nil && len(m.Extra) == 0 && m.Version == "" {
		return fmt.Errorf("%sthe mapping names no column to write", p)
	}
	switch m.MissingRow {
	case "", MissingSkip, MissingCreate, MissingFail:
	default:
		return fmt.Errorf("%smissing_row %q is not one of skip, create, fail", p, m.MissingRow)
	}
	if a := m.Actions; a != nil {
		if len(a.On) == 0 {
			return fmt.Errorf("%sactions.on is empty", p)
		}
		column := a.Column
		if column == "" {
			if m.Status == nil {
				return fmt.Errorf("%sactions.column is required when there is no status column", p)
			}
			column = m.Status.Column
		}
		if err := col("actions.column", column); err != nil {
			return err
		}
		if f := seen[column]; f != "" && f != "status.column" {
			return fmt.Errorf("%sactions.column %q is also %s", p, column, f)
		}
		if m.Version != "" && m.keyFrom() != FromWorkflowID {
			return fmt.Errorf("%sactions with a version column need key.from %q: graft then keeps no mirror_state to find a row's workflow", p, FromWorkflowID)
		}
		for _, v := range sortedKeys(a.On) {
			act := a.On[v]
			f := strictdecode.Join("actions.on", v)
			if v == "" {
				return fmt.Errorf("%sactions.on has an empty request value", p)
			}
			if act.Cancel == (act.Signal != "") {
				return fmt.Errorf("%s%s: set exactly one of cancel and signal", p, f)
			}
			if m.Status != nil && column == m.Status.Column {
				for _, st := range sortedStates(m.Status.Values) {
					if m.Status.Values[st] == v {
						return fmt.Errorf("%s%s: %q is also the status value of state %s", p, f, v, st)
					}
				}
			}
			if act.Ack == "" {
				if m.Status == nil || column != m.Status.Column {
					return fmt.Errorf("%s%s.ack is required when requests are not in the status column", p, f)
				}
				for _, st := range States {
					if m.Status.Values[st] == "" {
						return fmt.Errorf("%s%s.ack is empty, so it writes the status of the run's state, but status.values has no value for %s: set ack or map every state", p, f, st)
					}
				}
			}
		}
	}
	return nil
}

func (m *Mapping) missingRow() MissingRowPolicy {
	if m.MissingRow == "" {
		return MissingSkip
	}
	return m.MissingRow
}

func (m *Mapping) keyFrom() KeySource {
	if m.Key.From == "" {
		return FromWorkflowID
	}
	return m.Key.From
}

func (m *Mapping) actionColumn() string {
	if m.Actions == nil {
		return ""
	}
	if m.Actions.Column != "" {
		return m.Actions.Column
	}
	return m.Status.Column
}

func fieldPrefix(table string) string { return "graftsync: mapping for " + table + ": " }

func checkPath(path string) error {
	for _, part := range strings.Split(path, ".") {
		if part == "" {
			return fmt.Errorf("%q has an empty part", path)
		}
	}
	return nil
}

func stateList() string {
	s := make([]string, len(States))
	for i, x := range States {
		s[i] = string(x)
	}
	return strings.Join(s, ", ")
}

func sortedStates(m map[State]string) []State {
	out := make([]State, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
