package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/lib/pq"

	"github.com/graftdev/graft/internal/pgident"
)

// Bounds of a preview's scan.
const (
	// PreviewLimitDefault is how many pending rows a preview counts when
	// asked for no limit.
	PreviewLimitDefault = 10000
	// PreviewLimitMax is the most rows one preview may count.
	PreviewLimitMax = 100000
	// previewKeys is how many keys a preview details.
	previewKeys = 20
	// previewTimeout bounds a preview's query.
	previewTimeout = 10 * time.Second
)

// RouteCounts counts rows per route.
type RouteCounts struct {
	Graft, Legacy int64
}

// KeyPreview is one routing key's share of a preview.
type KeyPreview struct {
	Key                     string
	Rows                    int64
	BeforeGraft, AfterGraft int64
}

// FlagPreview is what a change to a kind's flag would route, over the kind's
// pending legacy rows.
type FlagPreview struct {
	Kind string
	// Scanned is how many pending rows were counted; Limit bounded it.
	Scanned int64
	Limit   int
	// Estimate is true when the scan stopped at Limit: the counts are over
	// the first Limit pending rows the scan found, not all of them.
	Estimate bool
	// Before and After count the rows per route under the flags now and
	// under the proposed flag.
	Before, After RouteCounts
	// ToGraft and ToLegacy count the rows the change moves.
	ToGraft, ToLegacy int64
	// ByKey details the keys with the most rows, most first.
	ByKey []KeyPreview
}

// ErrPreviewUnavailable is returned by PreviewFlag for a source whose
// routing key is computed in Go (Key.Func), which SQL cannot evaluate.
var ErrPreviewUnavailable = errors.New("tasks: preview unavailable")

// Declares reports whether the intake's source declares kind.
func (in *Intake) Declares(kind string) bool { return slices.Contains(in.kinds, kind) }

// PreviewFlag counts what the proposed flag would route among the source's
// pending rows of its kind, before (the flags now) and after, without
// changing anything. Both sides are decided in SQL by the schema's own
// functions (flag_bucket per row, route_threshold per key, which decide as
// route_decision does), over at most limit rows (0: PreviewLimitDefault)
// read without locks, under a statement timeout, so a preview of a large
// table is bounded; when the bound is reached the result says it is an
// estimate. A key rule naming a key the source's key transform would change
// is refused as Flags.Set refuses it (Flag.ValidateKeys).
func (in *Intake) PreviewFlag(ctx context.Context, proposed Flag, limit int) (*FlagPreview, error) {
	if err := proposed.Validate(); err != nil {
		return nil, err
	}
	if !in.Declares(proposed.Kind) {
		return nil, fmt.Errorf("%w: source %s declares no kind %q", ErrUnknownKind, in.src.name(), proposed.Kind)
	}
	if t := in.src.recordKeyTransform(); t.Valid {
		if err := proposed.ValidateKeys(t.String); err != nil {
			return nil, err
		}
	}
	switch {
	case limit == 0:
		limit = PreviewLimitDefault
	case limit < 0 || limit > PreviewLimitMax:
		return nil, fmt.Errorf("tasks: preview limit %d is outside 1-%d", limit, PreviewLimitMax)
	}
	keySQL := in.src.keySQL()
	if keySQL == "" {
		return nil, fmt.Errorf("%w: source %s computes its routing key in Go (%s); a preview needs %s", ErrPreviewUnavailable, in.src.name(),
			in.src.field("key.func"), in.src.field("key.column"))
	}
	if proposed.KeyRules == nil {
		proposed.KeyRules = []KeyRule{}
	}
	flagJSON, err := json.Marshal(proposed)
	if err != nil {
		return nil, err
	}
	s := &in.src
	q := func(c string) string { return "t." + pgident.Quote(c) }
	// Thresholds per key (route_threshold, for the flag now and the one
	// proposed), then per row only its bucket (flag_bucket): the same
	// decision as route_decision (tested), at the cost of one md5 a row.
	query := `WITH s AS (
			SELECT ` + q(s.ID) + `::text AS id, ` + keySQL + ` AS key FROM ` + in.table.Quoted() + ` t
			WHERE ` + q(s.Status.Column) + ` = $1 AND ` + q(s.Kind) + `::text = $2 LIMIT $3),
		g AS (SELECT st.killed, (SELECT to_jsonb(f) FROM ` + in.schema + `.flags f WHERE f.kind = $2) AS flag
			FROM ` + in.schema + `.flags_state st WHERE st.id = 1),
		k AS (SELECT DISTINCT s.key FROM s),
		th AS (SELECT k.key, ` + in.schema + `.route_threshold(g.killed, g.flag, k.key) AS before,
			` + in.schema + `.route_threshold(g.killed, $4::jsonb, k.key) AS after FROM k CROSS JOIN g),
		b AS (SELECT s.key, ` + in.schema + `.flag_bucket($2, s.id) AS bucket FROM s)
		SELECT COALESCE(b.key, ''), count(*),
			count(*) FILTER (WHERE b.bucket < th.before), count(*) FILTER (WHERE b.bucket < th.after),
			count(*) FILTER (WHERE b.bucket >= th.before AND b.bucket < th.after),
			count(*) FILTER (WHERE b.bucket < th.before AND b.bucket >= th.after)
		FROM b JOIN th ON th.key IS NOT DISTINCT FROM b.key
		GROUP BY 1`
	tx, err := in.db.BeginTxx(ctx, nil)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`SET LOCAL statement_timeout = %d`, previewTimeout.Milliseconds())); err != nil {
		return nil, err
	}
	rows, err := tx.QueryContext(ctx, query, s.Status.Pending, proposed.Kind, limit, string(flagJSON))
	if err != nil {
		return nil, previewErr(s, err)
	}
	defer rows.Close()
	p := &FlagPreview{Kind: proposed.Kind, Limit: limit, ByKey: []KeyPreview{}}
	for rows.Next() {
		var k KeyPreview
		var toGraft, toLegacy int64
		if err := rows.Scan(&k.Key, &k.Rows, &k.BeforeGraft, &k.AfterGraft, &toGraft, &toLegacy); err != nil {
			return nil, err
		}
		p.Scanned += k.Rows
		p.Before.Graft += k.BeforeGraft
		p.After.Graft += k.AfterGraft
		p.ToGraft += toGraft
		p.ToLegacy += toLegacy
		p.ByKey = append(p.ByKey, k)
	}
	if err := rows.Err(); err != nil {
		return nil, previewErr(s, err)
	}
	p.Before.Legacy, p.After.Legacy = p.Scanned-p.Before.Graft, p.Scanned-p.After.Graft
	p.Estimate = p.Scanned >= int64(limit)
	slices.SortFunc(p.ByKey, func(a, b KeyPreview) int {
		if a.Rows != b.Rows {
			return int(b.Rows - a.Rows)
		}
		return strings.Compare(a.Key, b.Key)
	})
	if len(p.ByKey) > previewKeys {
		p.ByKey = p.ByKey[:previewKeys]
	}
	return p, nil
}

// previewErr names a preview that ran past its statement timeout as
// unavailable, with what to do about it.
func previewErr(s *Source, err error) error {
	var pqErr *pq.Error
	if errors.As(err, &pqErr) && pqErr.Code == "57014" {
		return fmt.Errorf("%w: %spreview took longer than %s; ask for a smaller limit", ErrPreviewUnavailable, s.prefix(), previewTimeout)
	}
	return fmt.Errorf("%spreview: %w", s.prefix(), err)
}
