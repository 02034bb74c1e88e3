// Package grafttest is a test kit for code built on graft: an engine on a
// throwaway PostgreSQL schema in one call, waits on a run's status with a
// deadline, one activity run alone, and a replayer that checks today's
// workflow code against recorded runs before a deploy.
//
//	func TestRenewal(t *testing.T) {
//		e := grafttest.NewEngine(t, engine.Config{})
//		require.NoError(t, e.Register(renew, charge))
//		grafttest.StartWorker(t, e)
//		run, err := renew.Start(ctx, e.Client(), in, nil)
//		require.NoError(t, err)
//		grafttest.WaitStatus(t, run, engine.StatusCompleted)
//	}
//
//	func TestRenewalStillReplays(t *testing.T) {
//		grafttest.ReplayFile(t, "testdata/renewals.json", renew)
//	}
//
// Tests need a PostgreSQL server: GRAFT_DATABASE_URL, or the local default
// the project's Makefile sets up. Each engine lives in a schema of its own,
// dropped when the test ends, so tests run in parallel.
//
// It imports engine, and none of graft's other packages.
package grafttest
