package graftsync

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"sync"
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
		switch ev.Status {
		case engine.StatusCompleted:
			return StateCompleted
		case engine.StatusFailed:
			if mr.needsOperator(ev.Err) {
				return StateNeedsOperator
			}
			return StateFailed
		case engine.StatusCancelled:
			return StateCancelled
		}
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
	return IsNeedsOperator(err)
}

// toChange turns one event into a change for row key; idx is its index in
// the batch.
func (mr *Mirror) toChange(ev *engine.CheckpointEvent, key string, idx int64) *change {
	c := &change{Key: key, WorkflowID: ev.WorkflowID, RunID: ev.RunID, First: idx, Last: idx, State: mr.stateOf(ev), At: ev.At}
	if c.At.IsZero() {
		c.At = time.Now()
	}
	c.Weak = ev.Kind == engine.CheckpointWorkflowWaiting
	c.Started = ev.Kind == engine.CheckpointWorkflowStarted
	c.Closed = ev.Kind == engine.CheckpointWorkflowClosed && ev.Status != engine.StatusContinued
	activity := ev.Kind == engine.CheckpointActivityCompleted || ev.Kind == engine.CheckpointActivityFailed
	if activity {
		if s := mr.m.Step; s != nil {
			if len(s.Labels) == 0 {
				c.Step = mr.fit("Step.Column", ev.ActivityName)
			} else if l, ok := s.Labels[ev.ActivityName]; ok {
				c.Step = &l
			}
		}
		if mr.m.Attempts != "" {
			a := int64(ev.Attempt)
			c.Attempts = &a
		}
	}
	if mr.m.Error != nil {
		switch {
		case ev.Err != nil && (ev.Kind == engine.CheckpointActivityFailed || ev.Kind == engine.CheckpointWorkflowClosed):
			c.Err = mr.fit("Error.Column", ev.Err.Error())
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
				mr.log.Warn("graftsync: extra column not written", "table", mr.table.String(), "column", x.col.name,
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

// fit truncates s to the column's length, so a long message cannot fail the
// checkpoint.
func (mr *Mirror) fit(field, s string) *string {
	if c := mr.cols[field]; c != nil && c.maxLen > 0 && utf8.RuneCountInString(s) > c.maxLen {
		r := []rune(s)
		s = string(r[:c.maxLen])
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

func (x *extra) value(ev *engine.CheckpointEvent) (*string, error) {
	var v any
	if x.compute != nil {
		var err error
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
	s, err := render(x.col, v)
	if err != nil {
		return nil, fmt.Errorf("column %q (%s): %w", x.col.name, x.col.typ, err)
	}
	return &s, nil
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
	k := c.kind()
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
		if err := c.accepts(s); err != nil {
			return "", err
		}
	}
	return s, nil
}

// normalizeKey checks a key against the key column's type and returns it
// the way the column prints it (so that it matches RETURNING key::text).
func normalizeKey(c *column, key string) (string, error) {
	if key == "" {
		return "", fmt.Errorf("empty key")
	}
	switch c.kind() {
	case kindInt:
		n, err := strconv.ParseInt(strings.TrimSpace(key), 10, 64)
		if err != nil {
			return "", fmt.Errorf("key %q is not an integer (column %q is %s)", key, c.name, c.typ)
		}
		return strconv.FormatInt(n, 10), nil
	case kindUUID:
		if !uuidRe.MatchString(key) {
			return "", fmt.Errorf("key %q is not a uuid (column %q is %s)", key, c.name, c.typ)
		}
		h := strings.ToLower(strings.ReplaceAll(key, "-", ""))
		return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
	}
	if c.maxLen > 0 && utf8.RuneCountInString(key) > c.maxLen {
		return "", fmt.Errorf("key %q is longer than column %q's %d characters", key, c.name, c.maxLen)
	}
	if c.base == oidBpchar {
		key = strings.TrimRight(key, " ")
	}
	return key, nil
}

// keyText renders an input field's value as a key.
func keyText(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, x != ""
	case json.Number:
		return x.String(), true
	case bool:
		return strconv.FormatBool(x), true
	}
	return "", false
}

// runKeys remembers the row key of runs whose key comes from the workflow
// input, which only the start and the workflow's execution see. A run's key
// is added when the run is loaded (ExecuteWorkflow, which in a worker comes
// before any of the run's checkpoints) and removed when its wait or its end
// is checkpointed. Query replays add keys too, hence the count of holders;
// keys nobody holds (query replays, runs abandoned after losing their lease)
// are evicted once idle for a minute and the map is full.
type runKeys struct {
	mu  sync.Mutex
	m   map[string]*runKey
	max int
}

type runKey struct {
	key  string
	refs int
	idle time.Time
}

func (k *runKeys) get(runID string) (string, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if e := k.m[runID]; e != nil {
		return e.key, true
	}
	return "", false
}

func (k *runKeys) acquire(runID, key string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil {
		k.m = map[string]*runKey{}
	}
	e := k.m[runID]
	if e == nil {
		if len(k.m) >= k.max {
			cutoff := time.Now().Add(-time.Minute)
			for id, x := range k.m {
				if x.refs <= 0 && x.idle.Before(cutoff) {
					delete(k.m, id)
				}
			}
		}
		e = &runKey{key: key}
		k.m[runID] = e
	}
	e.refs++
}

// release ends one hold. The key stays: a workflow that returned still has
// its end to checkpoint.
func (k *runKeys) release(runID string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if e := k.m[runID]; e != nil {
		e.refs--
		if e.refs <= 0 {
			e.idle = time.Now()
		}
	}
}

func (k *runKeys) drop(runID string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.m, runID)
}
