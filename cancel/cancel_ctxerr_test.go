package cancel_test

import (
	"slices"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/cancel"
	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/grafttest"
	"github.com/graftdev/graft/internal/testenv"
)

// A charge cut short by the cancellation that went through all the same and
// then returned its context's error is possibly done, not failed: the
// engine runs it again under the same idempotency key (the provider finds
// the charge), and the refund runs for it, exactly once.
func TestChargeThatWentThroughThenReturnedCtxErrIsRefunded(t *testing.T) {
	t.Parallel()
	v := newEnv(t, envOptions{})
	v.p.chargeThenCtxErr.Store(true)
	ctx := grafttest.Context(t, 30*time.Second)
	h := v.p.hold("charge", false)
	o := Order{ID: "op-ctxerr", Domain: "example.com", Amount: 1200}
	run := v.start(v.s.renew, o, nil)
	<-h.started
	require.NoError(t, v.c.Cancel(ctx, o.ID, "customer asked"))
	// The first attempt saw its cancellation and charged anyway; the next
	// one may pass the hold.
	testenv.Eventually(t, 20*time.Second, func() bool { return slices.Contains(v.p.callLog(), "charge:ctx-cancelled") },
		"the charge never saw its cancellation")
	close(h.release)
	_, err := run.Result(ctx)
	requireCanceled(t, err, "customer asked")

	charges, refunds := v.ledger(o.ID)
	require.Equal(t, 1, charges, "charges")
	require.Equal(t, 1, refunds, "refunds")
	r := v.report(o.ID)
	require.Equal(t, cancel.OutcomeCompensated, r.Outcome)
	require.Equal(t, []string{"shop.refund:compensated"}, undoStatuses(r))
	require.Equal(t, 1, count(v.p.callLog(), "refund"))
	status, refundRef, _ := v.legacy(o.ID)
	require.Equal(t, string(engine.StatusCancelled), status)
	require.NotNil(t, refundRef, "the legacy row carries the refund reference")
	hist, err := v.c.History(ctx, o.ID)
	require.NoError(t, err)
	require.Equal(t, "completed", hist[0].Steps[0].Status, "the charge's record is its true outcome")
	require.Equal(t, 2, hist[0].Steps[0].Attempts)
}

func count(xs []string, x string) int {
	n := 0
	for _, y := range xs {
		if y == x {
			n++
		}
	}
	return n
}
