package tasks

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"
)

// transformKey applies a key transform to a key column's text, as keySQL
// does in SQL.
func transformKey(transform, k string) string {
	switch transform {
	case TransformLower:
		return strings.ToLower(k)
	case TransformTLD:
		i := strings.LastIndexByte(k, '.')
		return strings.ToLower(k[i+1:])
	}
	return k
}

// transformSays says what a transform does to a kind's keys, for errors.
func transformSays(transform string) string {
	switch transform {
	case TransformLower:
		return "lower-cases its keys"
	case TransformTLD:
		return "keys on the last dot-separated label, lower-cased"
	}
	return "uses its keys as they are"
}

// ValidateKeys checks the key rules against the key transform of a source
// that declares the flag's kind (Source.Key.Transform): a key names an
// operation's routing key as the transform derives it, so a key the
// transform would change ("EU" when keys are lower-cased, "example.com" or
// ".COM" when they are a domain's TLD) can never match. Such a key is
// refused, not rewritten, with a *FlagValueError naming the key, the kind,
// the transform and the key to write instead.
func (fl *Flag) ValidateKeys(transform string) error {
	for i, r := range fl.KeyRules {
		for _, k := range r.Keys {
			want := transformKey(transform, k)
			if want == k {
				continue
			}
			fix := fmt.Sprintf("write %q", want)
			if want == "" {
				fix = "no key can match it, remove it"
			}
			problem := fmt.Sprintf("key %q never matches: kind %s %s (transform %s); %s", k, fl.Kind, transformSays(transform), transform, fix)
			return &FlagValueError{Kind: fl.Kind, Field: "KeyRules", Rule: i, Value: fmt.Sprintf("%s=%v", strings.Join(r.Keys, ","), r.Percent),
				Problem: problem, msg: fmt.Sprintf("KeyRules[%d]: %s", i, problem)}
		}
	}
	return nil
}

// keyTransforms returns the key transforms the intakes of the sources
// declaring each kind recorded (Source.Key.Transform; none for a source
// whose key is computed in Go), by kind; only kinds in kinds when it is not
// empty.
func keyTransforms(ctx context.Context, q sqlx.QueryerContext, schema string, kinds ...string) (map[string][]string, error) {
	var only any // NULL: every kind
	if len(kinds) > 0 {
		only = pq.Array(kinds)
	}
	rows, err := q.QueryxContext(ctx, `SELECT DISTINCT kind, key_transform FROM `+schema+`.intake_kinds
		WHERE key_transform IS NOT NULL AND ($1::text[] IS NULL OR kind = ANY($1::text[])) ORDER BY 1, 2`, only)
	if err != nil {
		return nil, fmt.Errorf("tasks: read the kinds' key transforms: %w", err)
	}
	defer rows.Close()
	out := map[string][]string{}
	for rows.Next() {
		var kind, transform string
		if err := rows.Scan(&kind, &transform); err != nil {
			return nil, err
		}
		out[kind] = append(out[kind], transform)
	}
	return out, rows.Err()
}

// checkKeys refuses key rules that a transform of the kind's sources would
// change (ValidateKeys), unless they are the rules the flag already holds
// (old): a change that keeps them, such as the kill switch, is not blocked
// by a rule stored before the check or before a source's transform changed.
func checkKeys(nf Flag, old *Flag, transforms []string) error {
	if old != nil && slices.EqualFunc(nf.KeyRules, old.KeyRules, func(a, b KeyRule) bool {
		return a.Percent == b.Percent && slices.Equal(a.Keys, b.Keys)
	}) {
		return nil
	}
	for _, t := range transforms {
		if err := nf.ValidateKeys(t); err != nil {
			return err
		}
	}
	return nil
}

// KeyRuleProblems names, by kind, the flags of snap (read from Snapshot)
// with a key rule that can never match (ValidateKeys against the
// transforms recorded for the kind's sources): rules stored before Set
// refused them, or before a source's transform changed. Set keeps them
// while a change leaves the rules as they are; the API and the UI show
// them as a warning.
func (f *Flags) KeyRuleProblems(ctx context.Context, snap *Snapshot) (map[string]error, error) {
	return keyRuleProblems(ctx, f.db, f.schema, snap)
}

func keyRuleProblems(ctx context.Context, q sqlx.QueryerContext, schema string, snap *Snapshot) (map[string]error, error) {
	out := map[string]error{}
	if len(snap.Flags) == 0 {
		return out, nil
	}
	transforms, err := keyTransforms(ctx, q, schema)
	if err != nil {
		return nil, err
	}
	for kind, fl := range snap.Flags {
		if err := checkKeys(*fl, nil, transforms[kind]); err != nil {
			out[kind] = err
		}
	}
	return out, nil
}

// recordKeyTransform is the key_transform intake records with its kinds:
// NULL for a key computed in Go, which no key rule is checked against.
func (s *Source) recordKeyTransform() sql.NullString {
	return sql.NullString{String: s.Key.Transform, Valid: s.Key.Column != ""}
}

// warnKeyRules logs the flags of the intake's kinds with a key rule that
// can never match under the transform just recorded (a rule stored before
// the check, or before the source's transform changed), which Set keeps.
func (in *Intake) warnKeyRules(ctx context.Context) {
	snap, err := readSnapshot(ctx, in.db, in.schema, false)
	if err == nil {
		var problems map[string]error
		if problems, err = keyRuleProblems(ctx, in.db, in.schema, snap); err == nil {
			for _, k := range in.kinds {
				if p := problems[k]; p != nil {
					in.log.Warn("tasks: a key rule of the flag can never match; change the flag's key rules", "kind", k, "problem", p)
				}
			}
			return
		}
	}
	in.log.Warn("tasks: could not check the flags' key rules", "err", err)
}
