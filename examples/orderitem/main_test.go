package main

import (
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/grafttest"
)

// The example end to end, with the outage: a busy warehouse costs one
// retry, a declined card fails at once with its details intact, and an
// outage exhausts the five attempts of the retry policy.
func TestOrderItem(t *testing.T) {
	t.Parallel()
	ctx := grafttest.Context(t, 3*time.Minute)
	schema := grafttest.Schema(t)
	var out strings.Builder
	require.NoError(t, run(ctx, options{DatabaseURL: grafttest.DatabaseURL(), Schema: schema, Keep: true, Outage: true}, &out))
	t.Log("\n" + out.String())
	require.Equal(t, `order-1 espresso machine: archived, fulfilled in 2 attempts
order-2 grinder: PaymentFailed after 1 attempt, not retried: card …0002, insufficient funds (item initialised)
order-3 kettle: WarehouseUnavailable after 5 attempts: the warehouse did not answer (item initialised)
`, out.String())

	// The waits between the outage's attempts follow the policy: 1+2+4+8 s
	// at least (a lower bound: a loaded machine only makes them longer).
	c := grafttest.NewClient(t, schema)
	h, err := c.History(ctx, "order-3")
	require.NoError(t, err)
	var fulfil *engine.StepInfo
	for i := range h[0].Steps {
		if h[0].Steps[i].Name == "orderitem.fulfil" {
			fulfil = &h[0].Steps[i]
		}
	}
	require.NotNil(t, fulfil)
	require.Equal(t, "failed", fulfil.Status, "a step status, not a run status")
	require.GreaterOrEqual(t, fulfil.CompletedAt.Sub(fulfil.StartedAt), 15*time.Second)
}
