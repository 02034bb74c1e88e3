package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/lib/pq"

	"github.com/graftdev/graft/ratelimit"
)

// The legacy world: its own schema with the operations table every other
// system reads, a read API customers track their operations with, and the
// old job runner. graft changes none of it: intake and the mirror only use
// the columns they are told about, and the runner's one change is the
// routed_to_graft predicate in its claim.
type legacy struct {
	db     *sqlx.DB
	schema string // the legacy schema
	graft  string // graft's schema, for routed_to_graft
}

func (l *legacy) table() string { return pq.QuoteIdentifier(l.schema) + ".operations" }

func (l *legacy) create(ctx context.Context) error {
	_, err := l.db.ExecContext(ctx, `
		CREATE TABLE `+l.table()+` (
			id         text PRIMARY KEY,
			kind       text NOT NULL,
			domain     text NOT NULL,
			customer   text NOT NULL,
			status     text NOT NULL DEFAULT 'pending',
			step       text,
			last_error text,
			attempts   int NOT NULL DEFAULT 0,
			runner     text,
			created_at timestamptz NOT NULL DEFAULT now(),
			updated_at timestamptz NOT NULL DEFAULT now(),
			version    bigint);
		CREATE INDEX ON `+l.table()+` (status);
		CREATE TABLE `+pq.QuoteIdentifier(l.schema)+`.payments (
			id          text PRIMARY KEY,
			operation   text NOT NULL,
			amount      bigint NOT NULL,
			refund_id   text,
			refunded_at timestamptz)`)
	return err
}

// burst inserts the 1st of the month: n renewals at once, most of them
// .com, .info and .fr; the premium domains given first.
func (l *legacy) burst(ctx context.Context, n int, premium []string) error {
	_, err := l.db.ExecContext(ctx, `
		INSERT INTO `+l.table()+` (id, kind, domain, customer)
		SELECT 'op-' || lpad(g::text, 6, '0'), 'renew',
		       COALESCE(($2::text[])[g], 'd' || g || '.' || (ARRAY['info','info','info','fr','fr','fr','com','com','com','com'])[g % 10 + 1]),
		       'cus-' || (g % 50)
		FROM generate_series(1, $1) g`, n, pq.Array(premium))
	if err != nil {
		return err
	}
	if _, err := l.db.ExecContext(ctx, `ANALYZE `+l.table()); err != nil {
		return err
	}
	// The legacy application tells whoever listens that rows came.
	_, err = l.db.ExecContext(ctx, `SELECT pg_notify($1, '')`, l.schema+"_operations")
	return err
}

// operation is one row as the legacy read API shows it.
type operation struct {
	ID        string    `json:"id" db:"id"`
	Domain    string    `json:"domain" db:"domain"`
	Status    string    `json:"status" db:"status"`
	Step      *string   `json:"step" db:"step"`
	LastError *string   `json:"last_error" db:"last_error"`
	UpdatedAt time.Time `json:"updated_at" db:"updated_at"`
}

// serveAPI starts the legacy read API: GET /operations/{id}.
func (l *legacy) serveAPI() (url string, stop func(), err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /operations/{id}", func(w http.ResponseWriter, r *http.Request) {
		var op operation
		err := l.db.GetContext(r.Context(), &op, `SELECT id, domain, status, step, last_error, updated_at FROM `+l.table()+` WHERE id = $1`, r.PathValue("id"))
		switch {
		case errors.Is(err, sql.ErrNoRows):
			http.Error(w, "no such operation", http.StatusNotFound)
		case err != nil:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		default:
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(op)
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), func() { _ = srv.Close() }, nil
}

// getOperation reads one operation through the legacy API, the way a
// customer's tracking page does.
func getOperation(hc *http.Client, api, id string) (operation, error) {
	var op operation
	resp, err := hc.Get(api + "/operations/" + id)
	if err != nil {
		return op, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return op, fmt.Errorf("legacy API: GET /operations/%s: %s", id, resp.Status)
	}
	return op, json.NewDecoder(resp.Body).Decode(&op)
}

// runner is the legacy job runner: workers that take pending renewals one
// at a time and process them the old, slow way. Its claim has the one
// predicate a migration adds, AND NOT routed_to_graft(...), so it leaves
// alone what the flags give to graft. Its registry calls take a slot from
// the same limiter as graft's, so the registry's limits hold for both.
type runner struct {
	l       *legacy
	workers int
	delay   time.Duration // the old path's pace per renewal
	limiter ratelimit.Limiter
	reg     string // the registry's URL
	hc      *http.Client
}

func (rn *runner) run(ctx context.Context) *sync.WaitGroup {
	var wg sync.WaitGroup
	for range rn.workers {
		wg.Go(func() {
			for ctx.Err() == nil {
				id, domain, err := rn.claim(ctx)
				switch {
				case err != nil || id == "":
					select {
					case <-ctx.Done():
					case <-time.After(500 * time.Millisecond): // idle: the old runner polls
					}
				default:
					rn.process(ctx, id, domain)
				}
			}
		})
	}
	return &wg
}

func (rn *runner) claim(ctx context.Context) (id, domain string, err error) {
	err = rn.l.db.QueryRowContext(ctx, `
		UPDATE `+rn.l.table()+` SET status = 'running', runner = 'legacy', updated_at = now()
		WHERE id = (SELECT id FROM `+rn.l.table()+`
		            WHERE status = 'pending' AND kind = 'renew'
		              AND NOT `+pq.QuoteIdentifier(rn.l.graft)+`.routed_to_graft(kind, lower(substring(domain from '[^.]+$')), id)
		            ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
		RETURNING id, domain`).Scan(&id, &domain)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", nil
	}
	return id, domain, err
}

// process renews one domain: the old path's slow preparation, then the
// registry (with a slot from the shared limiter, retrying what fails).
func (rn *runner) process(ctx context.Context, id, domain string) {
	select {
	case <-ctx.Done():
		return
	case <-time.After(rn.delay):
	}
	for attempt := 1; ctx.Err() == nil; attempt++ {
		err := rn.renew(ctx, id, domain)
		if err == nil {
			_, _ = rn.l.db.ExecContext(ctx, `UPDATE `+rn.l.table()+` SET status = 'done', step = 'renewed', attempts = $2,
				last_error = NULL, updated_at = now() WHERE id = $1`, id, attempt)
			return
		}
		_, _ = rn.l.db.ExecContext(ctx, `UPDATE `+rn.l.table()+` SET last_error = $2, attempts = $3 WHERE id = $1`, id, err.Error(), attempt)
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func (rn *runner) renew(ctx context.Context, id, domain string) error {
	held, err := ratelimit.Hold(ctx, rn.limiter, registryKey, "legacy-"+id, 5*time.Second)
	if err != nil {
		return err
	}
	defer func() { _ = held.Release(context.Background()) }() // the lease expires on its own
	req, err := http.NewRequestWithContext(held.Context(), http.MethodPost, rn.reg+"/v1/domains/"+domain+"/renew", nil)
	if err != nil {
		return err
	}
	var out map[string]string
	return call(rn.hc, req, &out)
}
