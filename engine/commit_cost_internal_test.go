package engine

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jmoiron/sqlx"
	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/cpustat"
	"github.com/graftdev/graft/internal/devenv"
)

// TestCommitCost measures the commit statement's backend CPU by batch size
// (GRAFT_COMMIT_COST=sizes, e.g. "8,32,128"; GRAFT_COMMIT_COST_N rounds
// of each, GRAFT_COMMIT_COST_P connections at once, GRAFT_COMMIT_COST_SQL
// run on each connection first, e.g. to load auto_explain). Each
// connection writes batches of the bench's steady mix (a quarter each: a
// run's insert with its first activity's start, an activity's result with
// the next one's start (twice), the last result with the run's end) one at
// a time, each followed by a SELECT 1, and reads its backend's CPU from
// /proc/<pid>/schedstat (Linux, PostgreSQL on this machine). It prints the
// median by size and a least-squares fit of fixed and per-op cost; it
// asserts nothing.
func TestCommitCost(t *testing.T) {
	spec := os.Getenv("GRAFT_COMMIT_COST")
	if spec == "" {
		t.Skip("GRAFT_COMMIT_COST not set")
	}
	var sizes []int
	for _, f := range strings.Split(spec, ",") {
		n, err := strconv.Atoi(f)
		require.NoError(t, err)
		sizes = append(sizes, n)
	}
	rounds := 40
	if v := os.Getenv("GRAFT_COMMIT_COST_N"); v != "" {
		rounds, _ = strconv.Atoi(v)
	}
	par := 1
	if v := os.Getenv("GRAFT_COMMIT_COST_P"); v != "" {
		par, _ = strconv.Atoi(v)
	}
	ctx := context.Background()
	schema := fmt.Sprintf("cost_%d", time.Now().UnixNano())
	open := func() (*Engine, *sqlx.DB, int) {
		db, err := sqlx.Open("postgres", devenv.DatabaseURL())
		require.NoError(t, err)
		db.SetMaxOpenConns(1)
		db.SetMaxIdleConns(1)
		e, err := New(Config{DB: db, DatabaseURL: devenv.DatabaseURL(), Schema: schema})
		require.NoError(t, err)
		require.NoError(t, e.Migrate(ctx))
		if v := os.Getenv("GRAFT_COMMIT_COST_SQL"); v != "" {
			_, err := db.Exec(v)
			require.NoError(t, err)
		}
		var pid int
		require.NoError(t, db.QueryRow(`SELECT pg_backend_pid()`).Scan(&pid))
		fmt.Printf("backend pid %d\n", pid)
		return e, db, pid
	}
	results := make([]costResult, par)
	var wg sync.WaitGroup
	for g := range par {
		e, db, pid := open()
		defer db.Close()
		defer e.Close()
		if g == 0 {
			defer func() { _, _ = db.Exec(`DROP SCHEMA ` + schema + ` CASCADE`) }()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[g] = costLoop(t, ctx, e.store, db, pid, g, sizes, rounds)
		}()
	}
	wg.Wait()
	cpu := map[int][]int64{}
	opsOf := map[int]int{}
	for _, r := range results {
		for k, v := range r.cpu {
			cpu[k] = append(cpu[k], v...)
			opsOf[k] = r.opsOf[k]
		}
	}
	var xs, ys []float64
	for _, k := range sizes {
		v := cpu[k]
		sort.Slice(v, func(i, j int) bool { return v[i] < v[j] })
		med := v[len(v)/2]
		fmt.Printf("size=%d ops=%d cpu_us_median=%.0f p25=%.0f p75=%.0f per_op=%.1f\n", k, opsOf[k], float64(med)/1e3,
			float64(v[len(v)/4])/1e3, float64(v[3*len(v)/4])/1e3, float64(med)/1e3/float64(opsOf[k]))
		xs = append(xs, float64(opsOf[k]))
		ys = append(ys, float64(med)/1e3)
	}
	if len(xs) >= 2 {
		var sx, sy, sxx, sxy float64
		for i := range xs {
			sx, sy, sxx, sxy = sx+xs[i], sy+ys[i], sxx+xs[i]*xs[i], sxy+xs[i]*ys[i]
		}
		n := float64(len(xs))
		b := (n*sxy - sx*sy) / (n*sxx - sx*sx)
		fmt.Printf("fit par=%d fixed_us=%.0f per_op_us=%.1f (SELECT 1 included)\n", par, (sy-b*sx)/n, b)
	}
}

// costResult is a costLoop's calls' backend CPU (ns) by batch size, and
// the ops of a batch of each size.
type costResult struct {
	cpu   map[int][]int64
	opsOf map[int]int
}

// costLoop writes rounds batches of each size through s on db (one
// connection, its backend pid) and returns each call's backend CPU by size
// and the ops a batch of that size has; g keeps its runs apart from the
// other loops'.
func costLoop(t *testing.T, ctx context.Context, s *store, db *sqlx.DB, pid, g int, sizes []int, rounds int) (r costResult) {
	runs := 0
	in := []byte(`{"n":1}`)
	// cohorts[j] are the runs at stage j (0 new, 1..3 a result).
	type cohort []string
	stagesOf := map[int]*[4]cohort{}
	mkBatch := func(k int) []*writeOp {
		stages := stagesOf[k]
		if stages == nil {
			stages = &[4]cohort{}
			stagesOf[k] = stages
		}
		q := max(k/4, 1)
		var b []*writeOp
		now := time.Now()
		var fresh cohort
		for range q {
			runs++
			id := fmt.Sprintf("r%02d%08d", g, runs)
			fresh = append(fresh, id)
			b = append(b, &writeOp{runID: id, newRun: &newRunSpec{row: runRow{RunID: id, WorkflowID: "w" + id, WorkflowType: "bench", Queue: "default",
				Input: in, Headers: []byte(`{}`), StartReason: "start"}, reuse: ReuseAllowDuplicate, leaseOwner: "me"},
				owner: "me", token: 1,
				steps: []*stepRow{{RunID: id, Seq: 1, Kind: stepActivity, Name: "noop", Status: stepStarted, Input: in, Attempts: 1, StartedAt: nullTime(now)}}})
		}
		for j := 1; j <= 3; j++ {
			for _, id := range stages[j-1] {
				op := &writeOp{runID: id, owner: "me", token: 1, steps: []*stepRow{
					{RunID: id, Seq: j, Kind: stepActivity, Name: "noop", Status: stepCompleted, Input: in, Output: in, Attempts: 1, StartedAt: nullTime(now), CompletedAt: nullTime(now)}}}
				if j < 3 {
					op.steps = append(op.steps, &stepRow{RunID: id, Seq: j + 1, Kind: stepActivity, Name: "noop", Status: stepStarted, Input: in, Attempts: 1, StartedAt: nullTime(now)})
				} else {
					op.fin = &finishSpec{status: StatusCompleted, output: in, workflowID: "w" + id}
				}
				b = append(b, op)
			}
		}
		stages[3], stages[2], stages[1], stages[0] = stages[2], stages[1], stages[0], fresh
		sort.Slice(b, func(i, j int) bool { return b[i].runID < b[j].runID })
		return b
	}
	one := func(k int) (ns int64, ops int) {
		b := mkBatch(k)
		w := newSingleWrite(b, nil)
		c0 := cpustat.SchedNS(pid)
		_, _, err := s.stepsAndFinish(ctx, db, time.Now(), time.Minute, w)
		if err != nil {
			t.Error(err)
			return 0, len(b)
		}
		// The backend's CPU is read once it answered the next statement,
		// so the commit's flush is in.
		var x int
		if err := db.QueryRow(`SELECT 1`).Scan(&x); err != nil {
			t.Error(err)
		}
		return cpustat.SchedNS(pid) - c0, len(b)
	}
	// Warm up: the pipeline fills and the statement gets its generic plan.
	for range 12 {
		for _, k := range sizes {
			one(k)
		}
	}
	r.cpu, r.opsOf = map[int][]int64{}, map[int]int{}
	for range rounds {
		for _, k := range sizes {
			ns, ops := one(k)
			r.cpu[k] = append(r.cpu[k], ns)
			r.opsOf[k] = ops
		}
	}
	return r
}
