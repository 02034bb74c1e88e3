package graftsync

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/graftdev/graft/engine"
)

// stateOf maps a checkpoint to the state it leaves the workflow in.
func (mr *Mirror) stateOf(ev *engine.CheckpointEvent) State {
	switch ev.Kind {
	case engine.CheckpointWorkflowStarted:
		return StatePending
	case engine.CheckpointWorkflowWaiting:
		return StateWaiting
	case engine.CheckpointActivityFailed:
		if mr.needsOperator(ev.Err) {
			return StateNeedsOperator
		}
	case engine.CheckpointWorkflowClosed:
		return mr.stateOfRun(ev.Status, ev.Err)
	}
	return StateRunning
}

// stateOfRun maps a run's status (and, for a failed run, its error) to a
// state; a status with no state of its own (running, continued) is running.
func (mr *Mirror) stateOfRun(status engine.Status, err error) State {
	switch status {
	case engine.StatusPending:
		return StatePending
	case engine.StatusWaiting:
		return StateWaiting
	case engine.StatusCompleted:
		return StateCompleted
	case engine.StatusFailed:
		if mr.needsOperator(err) {
			return StateNeedsOperator
		}
		return StateFailed
	case engine.StatusCancelled:
		return StateCancelled
	}
	return StateRunning
}

func (mr *Mirror) needsOperator(err error) bool {
	if err == nil {
		return false
	}
	if mr.m.NeedsOperator != nil {
		return mr.m.NeedsOperator(err)
	}
	return errors.Is(err, engine.ErrNeedsOperator)
}

// toChange turns one event into a change for row key, in c; idx is its
// index in the batch.
func (mr *Mirror) toChange(c *change, ev *engine.CheckpointEvent, key string, idx int64) *change {
	*c = change{Key: key, WorkflowID: ev.WorkflowID, RunID: ev.RunID, First: idx, Last: idx, State: mr.stateOf(ev), At: ev.At,
		seqFirst: ev.Seq, seqLast: ev.Seq}
	if c.At.IsZero() {
		c.At = time.Now()
	}
	c.Weak = ev.Kind == engine.CheckpointWorkflowWaiting
	c.Started = ev.Kind == engine.CheckpointWorkflowStarted
	// A continued run is closed too: the next run carries on, and nothing
	// more of this one may show.
	c.Closed = ev.Kind == engine.CheckpointWorkflowClosed
	activity := ev.Kind == engine.CheckpointActivityCompleted || ev.Kind == engine.CheckpointActivityFailed
	if activity {
		if s := mr.m.Step; s != nil {
			if len(s.Labels) == 0 {
				c.Step = mr.fit("step.column", ev.ActivityName)
			} else if l, ok := mr.labels[ev.ActivityName]; ok {
				c.Step = l
			}
		}
		if mr.m.Attempts != "" {
			c.Attempts = attemptsOf(int64(ev.Attempt))
		}
	}
	if mr.m.Error != nil {
		switch {
		case ev.Err != nil && (ev.Kind == engine.CheckpointActivityFailed ||
			c.State == StateFailed || c.State == StateCancelled || c.State == StateNeedsOperator):
			c.Err = mr.fit("error.column", ev.Err.Error())
		case mr.m.Error.ClearOnSuccess && (ev.Kind == engine.CheckpointWorkflowStarted || ev.Kind == engine.CheckpointActivityCompleted ||
			c.State == StateCompleted):
			c.ClearErr = true
		}
	}
	if p := mr.m.Progress; p != nil {
		var v *float64
		if ev.Kind == engine.CheckpointActivityCompleted {
			if x, ok := p.Activities[ev.ActivityName]; ok {
				v = &x
			}
		} else if c.State == StateCompleted && ev.Kind == engine.CheckpointWorkflowClosed {
			v = p.Completed
		}
		if v != nil {
			s := strconv.FormatFloat(*v, 'f', -1, 64)
			c.Progress = &s
		}
	}
	if ev.Kind == engine.CheckpointActivityCompleted {
		for i, x := range mr.extras {
			if x.activity != ev.ActivityName {
				continue
			}
			v, err := x.value(ev)
			if err != nil {
				mr.log.Warn("graftsync: extra column not written", "table", mr.table.String(), "column", x.col.Name,
					"workflow_id", ev.WorkflowID, "activity", ev.ActivityName, "err", err)
				continue
			}
			if v == nil {
				continue
			}
			for len(c.Extras) <= i {
				c.Extras = append(c.Extras, nil)
			}
			c.Extras[i] = v
		}
	}
	return c
}

// attempts are the usual attempt counts, which changes share (a change's
// values are never written through their pointers).
var attempts = func() (a [16]int64) {
	for i := range a {
		a[i] = int64(i)
	}
	return a
}()

// attemptsOf points to n, shared when it is a usual count. (Returning &n
// moved n to the heap on every call, the shared path's too: an allocation
// per activity event.)
func attemptsOf(n int64) *int64 {
	if n >= 0 && n < int64(len(attempts)) {
		return &attempts[n]
	}
	p := new(int64)
	*p = n
	return p
}

// fit truncates s to the column's length, so a long message cannot fail the
// checkpoint.
func (mr *Mirror) fit(field, s string) *string {
	if c := mr.cols[field]; c != nil && c.MaxLen > 0 && utf8.RuneCountInString(s) > c.MaxLen {
		r := []rune(s)
		s = string(r[:c.MaxLen])
	}
	return &s
}

// extra is an ExtraColumn resolved against the table.
type extra struct {
	col      *column
	activity string
	field    []string
	compute  ExtraFunc
}

func (x *extra) value(ev *engine.CheckpointEvent) (s *string, err error) {
	var v any
	if x.compute != nil {
		// User code runs in the engine's committer: a panic must not take
		// the process down.
		defer func() {
			if r := recover(); r != nil {
				s, err = nil, fmt.Errorf("panic in the column's function: %v", r)
			}
		}()
		if v, err = x.compute(ev); err != nil {
			return nil, err
		}
	} else {
		b, err := json.Marshal(ev.Result)
		if err != nil {
			return nil, fmt.Errorf("encode the activity's result: %w", err)
		}
		var found bool
		if v, found = jsonField(b, x.field); !found {
			return nil, fmt.Errorf("the activity's result has no field %q", strings.Join(x.field, "."))
		}
	}
	if v == nil {
		return nil, nil
	}
	text, err := render(x.col, v)
	if err != nil {
		return nil, fmt.Errorf("column %q (%s): %w", x.col.Name, x.col.Type, err)
	}
	return &text, nil
}

// jsonField returns the value at path in the JSON document b (numbers as
// json.Number).
func jsonField(b []byte, path []string) (any, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return nil, false
	}
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[p]; !ok {
			return nil, false
		}
	}
	return v, true
}

var (
	uuidRe    = regexp.MustCompile(`^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$`)
	timeForms = []string{time.RFC3339Nano, "2006-01-02T15:04:05", "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05", "2006-01-02"}
)

// render turns a Go value into the text PostgreSQL casts to the column's
// type. It refuses what would not cast, so that a bad value is dropped (and
// logged) instead of failing the checkpoint.
func render(c *column, v any) (string, error) {
	k := kindOf(c)
	if k == kindJSON {
		switch x := v.(type) {
		case json.RawMessage:
			if !json.Valid(x) {
				return "", fmt.Errorf("invalid JSON")
			}
			return string(x), nil
		default:
			b, err := json.Marshal(v)
			return string(b), err
		}
	}
	var s string
	switch x := v.(type) {
	case string:
		s = x
	case time.Time:
		if k != kindTime && k != kindText {
			return "", fmt.Errorf("a time does not fit")
		}
		s = x.Format(time.RFC3339Nano)
	case *time.Time:
		if x == nil {
			return "", fmt.Errorf("nil time")
		}
		return render(c, *x)
	case bool:
		if k != kindBool && k != kindText {
			return "", fmt.Errorf("a boolean does not fit")
		}
		s = strconv.FormatBool(x)
	case json.Number:
		s = x.String()
	case int:
		s = strconv.FormatInt(int64(x), 10)
	case int8:
		s = strconv.FormatInt(int64(x), 10)
	case int16:
		s = strconv.FormatInt(int64(x), 10)
	case int32:
		s = strconv.FormatInt(int64(x), 10)
	case int64:
		s = strconv.FormatInt(x, 10)
	case uint:
		s = strconv.FormatUint(uint64(x), 10)
	case uint8:
		s = strconv.FormatUint(uint64(x), 10)
	case uint16:
		s = strconv.FormatUint(uint64(x), 10)
	case uint32:
		s = strconv.FormatUint(uint64(x), 10)
	case uint64:
		s = strconv.FormatUint(x, 10)
	case float32:
		s = strconv.FormatFloat(float64(x), 'f', -1, 32)
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return "", fmt.Errorf("%v is not a number a column can hold", x)
		}
		s = strconv.FormatFloat(x, 'f', -1, 64)
	case fmt.Stringer:
		s = x.String()
	default:
		if k != kindText {
			return "", fmt.Errorf("a %T does not fit", v)
		}
		b, err := json.Marshal(v)
		if err != nil {
			return "", err
		}
		s = string(b)
	}
	switch k {
	case kindInt:
		if _, err := strconv.ParseInt(s, 10, 64); err != nil {
			return "", fmt.Errorf("%q is not an integer", s)
		}
	case kindNum:
		if _, err := strconv.ParseFloat(s, 64); err != nil {
			return "", fmt.Errorf("%q is not a number", s)
		}
	case kindBool:
		if _, err := strconv.ParseBool(s); err != nil {
			return "", fmt.Errorf("%q is not a boolean", s)
		}
	case kindUUID:
		if !uuidRe.MatchString(s) {
			return "", fmt.Errorf("%q is not a uuid", s)
		}
	case kindTime:
		ok := false
		for _, f := range timeForms {
			if _, err := time.Parse(f, s); err == nil {
				ok = true
				break
			}
		}
		if !ok {
			return "", fmt.Errorf("%q is not a time (want RFC 3339 or 2006-01-02)", s)
		}
	default:
		if err := c.Accepts(s); err != nil {
			return "", err
		}
	}
	return s, nil
}
