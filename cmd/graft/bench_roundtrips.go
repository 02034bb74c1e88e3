package main

import (
	"database/sql"
	"fmt"
	"io"
	"time"

	"github.com/lib/pq"

	"github.com/graftdev/graft/internal/cpustat"
)

// roundTripsDefaultN is -scenario roundtrips' -n unless one is given.
const roundTripsDefaultN = 3000

// roundTripsPerIter is how many sequential round trips an iteration makes:
// as many as a workflow of three no-op activities needs at -c 1.
const roundTripsPerIter = 4

// benchRoundTrips is the floor that the basic scenario's go_cpu_us_per_wf
// at -n 300 -c 1 is compared with: plain database/sql and lib/pq (no
// engine), one connection, o.n iterations of four sequential prepared
// INSERT ... RETURNING id into a table of its own schema, which it drops.
// It writes one line: wall time, median iteration and this process's CPU
// per iteration.
func benchRoundTrips(w io.Writer, o benchOpts) error {
	if err := checkDatabaseURL(databaseURL()); err != nil {
		return err
	}
	db, err := sql.Open("postgres", databaseURL())
	if err != nil {
		return fmt.Errorf("GRAFT_DATABASE_URL %s: %w", redactURL(databaseURL()), err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	schema := pq.QuoteIdentifier(o.schema)
	if _, err := db.Exec(`CREATE SCHEMA ` + schema + `; CREATE TABLE ` + schema + `.roundtrips (id bigserial PRIMARY KEY, v text NOT NULL)`); err != nil {
		return err
	}
	if !o.keep {
		defer func() { _, _ = db.Exec(`DROP SCHEMA IF EXISTS ` + schema + ` CASCADE`) }()
	}
	st, err := db.Prepare(`INSERT INTO ` + schema + `.roundtrips (v) VALUES ($1) RETURNING id`)
	if err != nil {
		return err
	}
	defer st.Close()
	lat := make([]time.Duration, 0, o.n)
	c0, t0 := cpustat.Process(), time.Now()
	for range o.n {
		s := time.Now()
		for range roundTripsPerIter {
			var id int64
			if err := st.QueryRow("x").Scan(&id); err != nil {
				return err
			}
		}
		lat = append(lat, time.Since(s))
	}
	elapsed, cpu := time.Since(t0), cpustat.Process()-c0
	p50, _ := percentiles(lat)
	_, err = fmt.Fprintf(w, "roundtrips iterations=%d round_trips_per_iter=%d ms_per_iter=%.3f p50_ms=%.3f cpu_us_per_iter=%.0f\n",
		o.n, roundTripsPerIter, ms(elapsed)/float64(o.n), ms(p50), float64(cpu.Microseconds())/float64(o.n))
	return err
}
