package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/grafttest"
)

// Four monthly periods on the engine's fake clock: every 30-day timer
// unloads the run and fires when the test advances the clock, each period
// continues as new, and a cancellation twelve days into the fourth period
// sends the sorry email once and ends the subscription cancelled.
func TestSubscriptionThirtyDayPeriods(t *testing.T) {
	t.Parallel()
	ctx := grafttest.Context(t, 2*time.Minute)
	schema := grafttest.Schema(t)
	clock := engine.NewFakeClock(time.Date(2027, 1, 1, 9, 0, 0, 0, time.UTC))
	var out strings.Builder
	o := options{DatabaseURL: grafttest.DatabaseURL(), Schema: schema,
		Every: 30 * 24 * time.Hour, Periods: 4, Clock: clock, Advance: clock.Advance}
	require.NoError(t, run(ctx, o, &out))
	t.Log("\n" + out.String())
	require.Equal(t, `acme subscribes: 9.99 every 720h0m0s
period 1: invoice 9.99 dated 2027-01-01; run waiting until 2027-01-31
period 2: invoice 9.99 dated 2027-01-31; run waiting until 2027-03-02
period 3: invoice 9.99 dated 2027-03-02; run waiting until 2027-04-01
period 4: invoice 9.99 dated 2027-04-01; run waiting until 2027-05-01
cancelled mid-period: customer closed the account
emails to billing@acme.example: ["Sorry to see you go, acme"]
4 invoices; 4 runs chained by continue-as-new, each with a short record:
  run 1 continued activity subscription.charge, timer
  run 2 continued activity subscription.charge, timer
  run 3 continued activity subscription.charge, timer
  run 4 cancelled activity subscription.charge, timer, cancel, activity subscription.sorry_email
`, out.String())
}

// Nonsense on the command line is refused before anything is created.
func TestSubscriptionRefusesBadOptions(t *testing.T) {
	t.Parallel()
	err := run(grafttest.Context(t, 10*time.Second), options{Every: 0, Periods: 1}, &strings.Builder{})
	require.EqualError(t, err, "-every must be positive and -periods at least 1 (got 0s and 1)")
}
