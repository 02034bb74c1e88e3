package main

import (
	"io"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/testenv"
)

// The basic scenario with -workers and -stats counts what the worker
// processes send as well as what the benchmark's process sends: the claims
// are made only by the workers, so their statement line shows the workers'
// counts arrived. Not parallel: it reads the benchmark's lines from
// os.Stdout.
func TestBenchWorkersStatsCountEveryProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	r, w, err := os.Pipe()
	require.NoError(t, err)
	stdout := os.Stdout
	os.Stdout = w
	t.Cleanup(func() { os.Stdout = stdout })
	read := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(r)
		read <- string(b)
	}()
	o := benchOpts{n: 40, c: 8, workers: 2, shards: 1, stats: true, counters: &dbCounters{}, schema: testenv.Name(t) + "_bw"}
	err = benchBasic(o)
	os.Stdout = stdout
	require.NoError(t, w.Close())
	out := <-read
	require.NoError(t, err, out)
	require.Regexp(t, regexp.MustCompile(`(?m)^workflows=40 concurrency=8 .* workers=2$`), out)
	require.Regexp(t, regexp.MustCompile(`(?m)^stats workflows=40 round_trips_per_wf=[0-9.]+ commits_per_wf=[0-9.]+ `), out)
	var claims bool
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "statement calls_per_wf=") && strings.Contains(l, `WITH due AS (SELECT run_id FROM`) {
			claims = true
		}
	}
	require.True(t, claims, "no claim among the statements: the worker processes' counts are missing\n%s", out)
}

// Worker processes share the machine's cores: four on two cores run one
// thread for Go code each instead of two, one runs as many as there are
// cores, and a GOMAXPROCS set for the benchmark is left to its processes.
// Not parallel: it sets the environment.
func TestBenchWorkerProcessesShareTheCores(t *testing.T) {
	for _, tc := range []struct {
		cpus, workers int
		set, want     string
	}{
		{cpus: 2, workers: 4, want: "GOMAXPROCS=1"},
		{cpus: 2, workers: 1, want: "GOMAXPROCS=2"},
		{cpus: 8, workers: 3, want: "GOMAXPROCS=2"},
		{cpus: 2, workers: 4, set: "2", want: ""},
	} {
		if tc.set != "" {
			t.Setenv("GOMAXPROCS", tc.set)
		} else {
			t.Setenv("GOMAXPROCS", "")
			require.NoError(t, os.Unsetenv("GOMAXPROCS"))
		}
		var got []string
		for _, kv := range workerEnv(benchOpts{workers: tc.workers, schema: "s", c: 512}, tc.cpus) {
			if strings.HasPrefix(kv, "GOMAXPROCS=") {
				got = append(got, kv)
			}
		}
		if tc.want == "" {
			require.Empty(t, got, "%+v", tc)
		} else {
			require.Equal(t, []string{tc.want}, got, "%+v", tc)
		}
	}
}
