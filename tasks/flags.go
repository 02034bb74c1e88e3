package tasks

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/graftdev/graft/internal/pgident"
)

// GlobalKind names the global kill switch in the audit log.
const GlobalKind = "*"

// ErrVersionConflict is matched (errors.Is) by a *VersionConflictError.
var ErrVersionConflict = errors.New("tasks: flag version conflict")

// VersionConflictError refuses a change made against a stale version: the
// flag changed since the caller read it.
type VersionConflictError struct {
	Kind     string // the flag's kind, or GlobalKind
	Expected int64  // the version the change was made against
	Current  int64  // the version in the database
}

func (e *VersionConflictError) Error() string {
	return fmt.Sprintf("tasks: flag %q is at version %d, the change was made against version %d", e.Kind, e.Current, e.Expected)
}

// Is makes errors.Is(err, ErrVersionConflict) hold.
func (e *VersionConflictError) Is(target error) bool { return target == ErrVersionConflict }

// ErrUnknownKind is returned for a flag that names a kind no intake source
// declares.
var ErrUnknownKind = errors.New("tasks: unknown kind")

// FlagsConfig configures a Flags store.
type FlagsConfig struct {
	// DB holds graft's schema. Required.
	DB *sqlx.DB
	// DatabaseURL opens the LISTEN connection that hears flag changes.
	// Required.
	DatabaseURL string
	// Schema is graft's schema. Default "graft".
	Schema string
	// Logger receives the listener's errors. Default slog.Default().
	Logger *slog.Logger
	// MaxStale bounds how old the cached snapshot may be when no change
	// notification arrives (a lost LISTEN connection). Default 1 s.
	MaxStale time.Duration
}

// Flags reads and changes the routing flags. Reads are served from a
// snapshot that a change notification (LISTEN/NOTIFY) invalidates, so a
// change takes effect in every process within about a second; intake does
// not use the cache for its claims (it reads the flags in each claim
// transaction). Every change is versioned and audited.
type Flags struct {
	db       *sqlx.DB
	schema   string // quoted
	channel  string
	log      *slog.Logger
	maxStale time.Duration
	listener *pq.Listener

	mu      sync.Mutex
	cached  *Snapshot
	readAt  time.Time
	changed chan struct{} // closed and replaced on each notification
}

// NewFlags opens a Flags store and starts listening for changes. Run
// Migrate first. Close it when done.
func NewFlags(cfg FlagsConfig) (*Flags, error) {
	switch {
	case cfg.DB == nil:
		return nil, errors.New("tasks: FlagsConfig.DB is required")
	case cfg.DatabaseURL == "":
		return nil, errors.New("tasks: FlagsConfig.DatabaseURL is required")
	}
	schema := cmp.Or(cfg.Schema, "graft")
	if !pgident.Valid(schema) {
		return nil, fmt.Errorf("tasks: FlagsConfig.Schema %q is not a valid identifier", schema)
	}
	f := &Flags{db: cfg.DB, schema: pgident.Quote(schema), channel: flagsChannel(schema),
		log: cmp.Or(cfg.Logger, slog.Default()), maxStale: cmp.Or(cfg.MaxStale, time.Second), changed: make(chan struct{})}
	l, err := listen(cfg.DatabaseURL, f.log, f.channel)
	if err != nil {
		return nil, err
	}
	f.listener = l
	go f.loop()
	return f, nil
}

func flagsChannel(schema string) string { return schema + "_flags" }

// Close stops listening.
func (f *Flags) Close() error { return f.listener.Close() }

func (f *Flags) loop() {
	for n := range f.listener.Notify {
		_ = n // nil after a reconnect: changes may have been missed; drop the cache too
		f.invalidate()
	}
}

// invalidate drops the cached snapshot and wakes Changed's waiters.
func (f *Flags) invalidate() {
	f.mu.Lock()
	f.cached = nil
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// Changed returns a channel closed at the next change notification (or
// listener reconnect).
func (f *Flags) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// Snapshot returns the current flag set, from the cache when no change was
// announced since it was read (and it is younger than MaxStale).
func (f *Flags) Snapshot(ctx context.Context) (*Snapshot, error) {
	f.mu.Lock()
	s, at := f.cached, f.readAt
	f.mu.Unlock()
	if s != nil && time.Since(at) < f.maxStale {
		return s, nil
	}
	f.mu.Lock()
	changed := f.changed
	f.mu.Unlock()
	now := time.Now()
	s, err := readSnapshot(ctx, f.db, f.schema, false)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	if f.changed == changed { // no change announced while reading
		f.cached, f.readAt = s, now
	}
	f.mu.Unlock()
	return s, nil
}

// Evaluate routes one operation by the cached flags (see Evaluate).
func (f *Flags) Evaluate(ctx context.Context, kind, key, id string) (Decision, error) {
	s, err := f.Snapshot(ctx)
	if err != nil {
		return Decision{}, err
	}
	return Evaluate(s, kind, key, id), nil
}

// readSnapshot reads the flag set in q (the claim transaction, with share
// set, so that no change commits until the transaction ends).
func readSnapshot(ctx context.Context, q sqlx.QueryerContext, schema string, share bool) (*Snapshot, error) {
	s := &Snapshot{Flags: map[string]*Flag{}}
	lock := ""
	if share {
		lock = " FOR SHARE"
	}
	if err := q.QueryRowxContext(ctx, `SELECT version, killed FROM `+schema+`.flags_state WHERE id = 1`+lock).Scan(&s.Version, &s.Killed); err != nil {
		return nil, fmt.Errorf("tasks: read flags: %w", err)
	}
	rows, err := q.QueryxContext(ctx, `SELECT kind, killed, default_percent::float8, key_rules, version FROM `+schema+`.flags`)
	if err != nil {
		return nil, fmt.Errorf("tasks: read flags: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		fl := &Flag{}
		var rules []byte
		if err := rows.Scan(&fl.Kind, &fl.Killed, &fl.DefaultPercent, &rules, &fl.Version); err != nil {
			return nil, err
		}
		if err := json.Unmarshal(rules, &fl.KeyRules); err != nil {
			return nil, fmt.Errorf("tasks: flag %q: key rules: %w", fl.Kind, err)
		}
		s.Flags[fl.Kind] = fl
	}
	return s, rows.Err()
}

// Change is one change to a kind's flag.
type Change struct {
	// Flag is the new value; Flag.Version is ignored.
	Flag Flag
	// Version is the flag's version the change was made against; 0 creates
	// the flag (refused if it exists).
	Version int64
	// Actor is who made the change. Required.
	Actor string
	// Reason is why. Required.
	Reason string
}

// FlagValueError is a value Flag.Validate refuses: the field (Go's name of
// it), the key rule's index when it is in KeyRules, the value and what is
// wrong with it, for a caller that names the field its own way (the API,
// the CLI's flags).
type FlagValueError struct {
	// Kind is the flag's kind.
	Kind string
	// Field is "DefaultPercent" or "KeyRules".
	Field string
	// Rule is the index of the key rule in KeyRules.
	Rule int
	// Value is the refused value as the field is written: "150" for a
	// default percent, "com,net=150" for a key rule.
	Value string
	// Problem says what is wrong with it, without Go's field names: "150
	// is outside 0-100", "the percent 150 is outside 0-100".
	Problem string
	msg     string // with Go's field names
}

func (e *FlagValueError) Error() string { return fmt.Sprintf("tasks: flag %q: %s", e.Kind, e.msg) }

// Plain says what is refused as a form or a request writes it, without
// Go's field names: the Problem of a default percent, "rule 2 (com,net=150):
// the percent 150 is outside 0-100" of a key rule (numbered from 1).
func (e *FlagValueError) Plain() string {
	if e.Field == "KeyRules" {
		return fmt.Sprintf("rule %d (%s): %s", e.Rule+1, e.Value, e.Problem)
	}
	return e.Problem
}

// Validate checks the flag's values: a kind, percentages from 0 to 100 with
// at most two decimals, non-empty keys, no key in two rules. A refused value
// is a *FlagValueError.
func (fl *Flag) Validate() error {
	if fl.Kind == "" {
		return errors.New("tasks: Flag.Kind is required")
	}
	pct := func(p float64) string {
		if math.IsNaN(p) || p < 0 || p > 100 {
			return fmt.Sprintf("%v is outside 0-100", p)
		}
		if math.Abs(p*100-math.Round(p*100)) > 1e-6 {
			return fmt.Sprintf("%v has more than two decimals", p)
		}
		return ""
	}
	if why := pct(fl.DefaultPercent); why != "" {
		return &FlagValueError{Kind: fl.Kind, Field: "DefaultPercent", Value: fmt.Sprint(fl.DefaultPercent), Problem: why,
			msg: "DefaultPercent " + why}
	}
	seen := map[string]int{}
	for i, r := range fl.KeyRules {
		bad := func(problem, msg string) error {
			return &FlagValueError{Kind: fl.Kind, Field: "KeyRules", Rule: i, Value: fmt.Sprintf("%s=%v", strings.Join(r.Keys, ","), r.Percent),
				Problem: problem, msg: msg}
		}
		if why := pct(r.Percent); why != "" {
			return bad("the percent "+why, fmt.Sprintf("KeyRules[%d].Percent %s", i, why))
		}
		if len(r.Keys) == 0 {
			return bad("it has no key", fmt.Sprintf("KeyRules[%d].Keys is empty", i))
		}
		for _, k := range r.Keys {
			if k == "" {
				return bad("it has an empty key", fmt.Sprintf("KeyRules[%d].Keys has an empty key", i))
			}
			if j, dup := seen[k]; dup {
				return bad(fmt.Sprintf("key %q is in rule %d too", k, j+1), fmt.Sprintf("key %q is in KeyRules[%d] and KeyRules[%d]", k, j, i))
			}
			seen[k] = i
		}
	}
	return nil
}

// Set applies a change to a kind's flag and returns the flag at its new
// version. It is refused with a *VersionConflictError when the flag is no
// longer at c.Version, with ErrUnknownKind when no intake source declares
// the kind, and with a *FlagValueError when a key rule names a key that the
// key transform of a source declaring the kind would change, which could
// never match (Flag.ValidateKeys; rules left as the flag holds them are not
// checked again, see KeyRuleProblems). The change and its audit entry
// commit together, and every process hears of it.
func (f *Flags) Set(ctx context.Context, c Change) (*Flag, error) {
	if err := c.Flag.Validate(); err != nil {
		return nil, err
	}
	if c.Actor == "" || c.Reason == "" {
		return nil, errors.New("tasks: a flag change needs an Actor and a Reason")
	}
	nf := c.Flag
	if nf.KeyRules == nil {
		nf.KeyRules = []KeyRule{}
	}
	err := f.change(ctx, func(tx *sqlx.Tx, version int64) (old, cur any, ver int64, err error) {
		var known bool
		if err := tx.GetContext(ctx, &known, `SELECT EXISTS (SELECT 1 FROM `+f.schema+`.intake_kinds WHERE kind = $1)`, nf.Kind); err != nil {
			return nil, nil, 0, err
		}
		if !known {
			return nil, nil, 0, fmt.Errorf("%w: flag names kind %q, which no intake source declares", ErrUnknownKind, nf.Kind)
		}
		snap, err := readFlag(ctx, tx, f.schema, nf.Kind)
		if err != nil {
			return nil, nil, 0, err
		}
		transforms, err := keyTransforms(ctx, tx, f.schema, nf.Kind)
		if err != nil {
			return nil, nil, 0, err
		}
		if err := checkKeys(nf, snap, transforms[nf.Kind]); err != nil {
			return nil, nil, 0, err
		}
		var curVer int64
		if snap != nil {
			curVer = snap.Version
			old = snap
		}
		if curVer != c.Version {
			return nil, nil, 0, &VersionConflictError{Kind: nf.Kind, Expected: c.Version, Current: curVer}
		}
		nf.Version = curVer + 1
		rules, _ := json.Marshal(nf.KeyRules)
		_, err = tx.ExecContext(ctx, `INSERT INTO `+f.schema+`.flags (kind, killed, default_percent, key_rules, version, updated_at, updated_by)
			VALUES ($1, $2, $3, $4, $5, now(), $6)
			ON CONFLICT (kind) DO UPDATE SET killed = $2, default_percent = $3, key_rules = $4, version = $5, updated_at = now(), updated_by = $6`,
			nf.Kind, nf.Killed, nf.DefaultPercent, string(rules), nf.Version, c.Actor)
		return old, &nf, nf.Version, err
	}, nf.Kind, c.Actor, c.Reason)
	if err != nil {
		return nil, err
	}
	return &nf, nil
}

// GlobalKill turns the global kill switch on or off. version is the flag
// set's version the change was made against (Snapshot.Version); a stale one
// is refused with a *VersionConflictError. It returns the new version.
func (f *Flags) GlobalKill(ctx context.Context, killed bool, version int64, actor, reason string) (int64, error) {
	if actor == "" || reason == "" {
		return 0, errors.New("tasks: a flag change needs an actor and a reason")
	}
	var newVersion int64
	err := f.change(ctx, func(tx *sqlx.Tx, cur int64) (old, nw any, ver int64, err error) {
		if cur != version {
			return nil, nil, 0, &VersionConflictError{Kind: GlobalKind, Expected: version, Current: cur}
		}
		var was bool
		if err := tx.GetContext(ctx, &was, `SELECT killed FROM `+f.schema+`.flags_state WHERE id = 1`); err != nil {
			return nil, nil, 0, err
		}
		_, err = tx.ExecContext(ctx, `UPDATE `+f.schema+`.flags_state SET killed = $1, updated_by = $2 WHERE id = 1`, killed, actor)
		newVersion = cur + 1
		return map[string]bool{"killed": was}, map[string]bool{"killed": killed}, newVersion, err
	}, GlobalKind, actor, reason)
	return newVersion, err
}

// change runs apply in a transaction holding the flag set's row lock (so
// in-flight claims finish first and later ones see the change), bumps the
// flag set's version, writes the audit entry and announces the change.
func (f *Flags) change(ctx context.Context, apply func(tx *sqlx.Tx, setVersion int64) (old, cur any, ver int64, err error), kind, actor, reason string) error {
	tx, err := f.db.BeginTxx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var setVersion int64
	if err := tx.GetContext(ctx, &setVersion, `SELECT version FROM `+f.schema+`.flags_state WHERE id = 1 FOR UPDATE`); err != nil {
		return fmt.Errorf("tasks: change flag: %w", err)
	}
	old, cur, ver, err := apply(tx, setVersion)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `UPDATE `+f.schema+`.flags_state SET version = version + 1, updated_at = now() WHERE id = 1`); err != nil {
		return err
	}
	var oldJSON []byte
	if old != nil {
		oldJSON, _ = json.Marshal(old)
	}
	newJSON, _ := json.Marshal(cur)
	if _, err := tx.ExecContext(ctx, `INSERT INTO `+f.schema+`.flags_audit (kind, actor, reason, old_value, new_value, version, flags_version)
		VALUES ($1, $2, $3, $4, $5, $6, $7)`, kind, actor, reason, nullJSON(oldJSON), string(newJSON), ver, setVersion+1); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `SELECT pg_notify($1, $2)`, f.channel, kind); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	// The process that made the change reads it back at once, without
	// waiting for its own notification (TestFlagsWalk read a stale page).
	f.invalidate()
	return nil
}

func nullJSON(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}

// readFlag reads one kind's flag, or nil.
func readFlag(ctx context.Context, q sqlx.QueryerContext, schema, kind string) (*Flag, error) {
	fl := &Flag{}
	var rules []byte
	err := q.QueryRowxContext(ctx, `SELECT kind, killed, default_percent::float8, key_rules, version FROM `+schema+`.flags WHERE kind = $1`, kind).
		Scan(&fl.Kind, &fl.Killed, &fl.DefaultPercent, &rules, &fl.Version)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return fl, json.Unmarshal(rules, &fl.KeyRules)
}

// AuditEntry is one change to a flag.
type AuditEntry struct {
	ID     int64
	Kind   string // GlobalKind for the global kill switch
	Actor  string
	Reason string
	// Old is the value before (nil when the flag was created), New after,
	// as JSON.
	Old, New json.RawMessage
	// Version is the flag's version after the change; FlagsVersion the flag
	// set's.
	Version, FlagsVersion int64
	At                    time.Time
}

// Audit returns the changes to kind's flag (all flags when kind is ""),
// newest first, at most limit (default 100).
func (f *Flags) Audit(ctx context.Context, kind string, limit int) ([]AuditEntry, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := f.db.QueryContext(ctx, `SELECT id, kind, actor, reason, old_value, new_value, version, flags_version, at
		FROM `+f.schema+`.flags_audit WHERE $1 = '' OR kind = $1 ORDER BY id DESC LIMIT $2`, kind, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []AuditEntry
	for rows.Next() {
		var a AuditEntry
		var old, nw []byte
		if err := rows.Scan(&a.ID, &a.Kind, &a.Actor, &a.Reason, &old, &nw, &a.Version, &a.FlagsVersion, &a.At); err != nil {
			return nil, err
		}
		a.Old, a.New = old, nw
		out = append(out, a)
	}
	return out, rows.Err()
}
