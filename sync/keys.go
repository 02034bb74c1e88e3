package graftsync

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/graftdev/graft/engine"
)

// keyOf derives an event's row key.
func (mr *Mirror) keyOf(ev *engine.CheckpointEvent) (string, error) {
	var key string
	switch mr.m.keyFrom() {
	case FromWorkflowID:
		key = ev.WorkflowID
	case FromHeader:
		var ok bool
		if key, ok = ev.Headers[mr.m.Key.Name]; !ok {
			return "", fmt.Errorf("header %q is not set", mr.m.Key.Name)
		}
	case FromInput:
		if ev.Kind == engine.CheckpointWorkflowStarted && ev.Input != nil {
			k, err := mr.inputKey(ev.Input)
			if err != nil {
				return "", err
			}
			return k, nil
		}
		k, ok := mr.keys.get(ev.RunID)
		if !ok {
			return "", errors.New("the run's input key is unknown in this process (it was not loaded here)")
		}
		return k, nil
	}
	return normalizeKey(mr.key, key)
}

// inputKey derives the key from a workflow input.
func (mr *Mirror) inputKey(input any) (string, error) {
	b, err := json.Marshal(input)
	if err != nil {
		return "", fmt.Errorf("encode workflow input: %w", err)
	}
	v, found := jsonField(b, strings.Split(mr.m.Key.Name, "."))
	if !found {
		return "", fmt.Errorf("workflow input has no field %q", mr.m.Key.Name)
	}
	s, ok := keyText(v)
	if !ok {
		return "", fmt.Errorf("workflow input field %q is not a string or number", mr.m.Key.Name)
	}
	return normalizeKey(mr.key, s)
}

// normalizeKey checks a key against the key column's type and returns it
// the way the column prints it (so that it matches RETURNING key::text).
func normalizeKey(c *column, key string) (string, error) {
	if key == "" {
		return "", fmt.Errorf("empty key")
	}
	switch kindOf(c) {
	case kindInt:
		n, err := strconv.ParseInt(strings.TrimSpace(key), 10, 64)
		if err != nil {
			return "", fmt.Errorf("key %q is not an integer (column %q is %s)", key, c.Name, c.Type)
		}
		return strconv.FormatInt(n, 10), nil
	case kindUUID:
		if !uuidRe.MatchString(key) {
			return "", fmt.Errorf("key %q is not a uuid (column %q is %s)", key, c.Name, c.Type)
		}
		h := strings.ToLower(strings.ReplaceAll(key, "-", ""))
		return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:], nil
	}
	if c.MaxLen > 0 && utf8.RuneCountInString(key) > c.MaxLen {
		return "", fmt.Errorf("key %q is longer than column %q's %d characters", key, c.Name, c.MaxLen)
	}
	if c.Base == oidBpchar {
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
// is held while the run is loaded (ExecuteWorkflow, which in a worker comes
// before any of the run's checkpoints) and kept after, for the end the run
// checkpoints once its function has returned, and for a batch the engine
// retries; when the map is full, keys nobody has held for a minute go.
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

// release ends one hold.
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
