package tasks

import (
	"crypto/md5"
	"encoding/binary"
	"math"
	"slices"
)

// Route says which side processes an operation.
type Route string

// Routes.
const (
	// RouteGraft: intake claims the row and starts its workflow.
	RouteGraft Route = "graft"
	// RouteLegacy: the row is left to the legacy runner.
	RouteLegacy Route = "legacy"
)

// Rules: which part of the flags decided a route.
const (
	// RuleGlobalKill: the global kill switch is on (legacy).
	RuleGlobalKill = "global_kill"
	// RuleNoFlag: the kind has no flag (legacy).
	RuleNoFlag = "no_flag"
	// RuleKill: the kind's kill switch is on (legacy).
	RuleKill = "kill"
	// RuleKey: a key rule names the operation's key; its percentage decided.
	RuleKey = "key"
	// RuleDefault: no key rule names the key; the default percentage decided.
	RuleDefault = "default"
)

// Buckets is the number of buckets an operation ID hashes into: a
// percentage has a resolution of 0.01.
const Buckets = 10000

// KeyRule routes the operations whose key is one of Keys by Percent.
type KeyRule struct {
	// Keys are exact routing keys (a TLD, a region, a customer tier).
	Keys []string `json:"keys" yaml:"keys"`
	// Percent of these keys' operations go to graft, 0 to 100 (two
	// decimals).
	Percent float64 `json:"percent" yaml:"percent"`
}

// Flag routes one kind of operation. The first key rule that names the
// operation's key decides; otherwise DefaultPercent does. An operation goes
// to graft when its bucket (Bucket of the kind and the operation ID) is below
// the percentage times 100, so raising a percentage only ever adds
// operations to graft, and lowering it only takes some back.
type Flag struct {
	// Kind is the operation kind the flag routes (the flag's name, which
	// salts the bucket).
	Kind string `json:"kind" yaml:"kind"`
	// Killed stops intake of this kind at once: every operation is legacy.
	Killed bool `json:"killed" yaml:"killed"`
	// DefaultPercent routes the keys no rule names. Default 0.
	DefaultPercent float64 `json:"default_percent" yaml:"default_percent"`
	// KeyRules route named keys.
	KeyRules []KeyRule `json:"key_rules" yaml:"key_rules"`
	// Version is the flag's version, bumped by every change (read only).
	Version int64 `json:"version" yaml:"-"`
}

// Snapshot is the whole flag set at one version.
type Snapshot struct {
	// Version is the flag set's version, bumped by every change.
	Version int64
	// Killed is the global kill switch.
	Killed bool
	// Flags by kind.
	Flags map[string]*Flag
}

// Decision is where one operation goes and why; intake records it with each
// claim.
type Decision struct {
	Route Route `json:"route"`
	// Rule is the rule that decided (RuleKey, RuleDefault, RuleKill, ...).
	Rule string `json:"rule"`
	// Bucket is the operation's bucket, 0 to Buckets-1.
	Bucket int `json:"bucket"`
	// FlagsVersion is the flag set's version the decision was made with.
	FlagsVersion int64 `json:"flags_version"`
}

// Bucket is the operation's bucket for the flag named flag: the first 32
// bits of md5(flag + ":" + id), big-endian, modulo Buckets. The SQL function
// flag_bucket in graft's schema computes the same.
func Bucket(flag, id string) int {
	sum := md5.Sum([]byte(flag + ":" + id))
	return int(binary.BigEndian.Uint32(sum[:4]) % Buckets)
}

// threshold is the first bucket a percentage leaves to legacy; it rounds
// like PostgreSQL's round(numeric) (half away from zero).
func threshold(percent float64) int {
	return int(math.Round(percent * 100))
}

// Evaluate routes one operation by the flags in s. It is pure: the same
// snapshot and operation always give the same decision, and the SQL
// function route_decision gives it too.
func Evaluate(s *Snapshot, kind, key, id string) Decision {
	d := Decision{Route: RouteLegacy, Bucket: Bucket(kind, id), FlagsVersion: s.Version}
	if s.Killed {
		d.Rule = RuleGlobalKill
		return d
	}
	f := s.Flags[kind]
	switch {
	case f == nil:
		d.Rule = RuleNoFlag
		return d
	case f.Killed:
		d.Rule = RuleKill
		return d
	}
	d.Rule = RuleDefault
	pct := f.DefaultPercent
	for _, r := range f.KeyRules {
		if slices.Contains(r.Keys, key) {
			d.Rule, pct = RuleKey, r.Percent
			break
		}
	}
	if d.Bucket < threshold(pct) {
		d.Route = RouteGraft
	}
	return d
}
