package api_test

import (
	"context"
	"os"
	"sync"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/internal/testenv"
	"github.com/graftdev/graft/tasks/api"
)

// TestMigrateConcurrentlyAndAgain: many processes migrating at once, and
// again later, all succeed and apply each version once.
func TestMigrateConcurrentlyAndAgain(t *testing.T) {
	e := testenv.Engine(t, nil)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = api.Migrate(context.Background(), e.DB(), e.Schema()) })
	}
	wg.Wait()
	for _, err := range errs {
		require.NoError(t, err)
	}
	require.NoError(t, api.Migrate(context.Background(), e.DB(), e.Schema()))
	var n int
	require.NoError(t, e.DB().Get(&n, `SELECT count(*) FROM `+e.Schema()+`.api_migrations`))
	files, err := os.ReadDir("migrations")
	require.NoError(t, err)
	require.Equal(t, len(files), n, "each migration once")
}
