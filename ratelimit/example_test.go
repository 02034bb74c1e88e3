package ratelimit_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/ratelimit"
)

// A provider allows two calls in flight. The third caller is told why it was
// denied and gives its work back instead of waiting.
func ExampleHold() {
	var limits ratelimit.LimitsTable
	limits.Set("registry", ratelimit.Limits{Concurrency: 2, Rate: 50, Burst: 5})
	// In production: ratelimit.NewRedisLimiter(client, ratelimit.RedisConfig{Limits: &limits}).
	l, err := ratelimit.NewLocalLimiter(ratelimit.LocalConfig{Limits: &limits})
	if err != nil {
		panic(err)
	}
	defer l.Close()
	ctx := context.Background()

	for _, op := range []string{"op-1", "op-2", "op-3"} {
		held, err := ratelimit.Hold(ctx, l, "registry", op, 10*time.Millisecond)
		var snooze *engine.SnoozeError
		var denied *ratelimit.DeniedError
		if errors.As(err, &snooze) && errors.As(err, &denied) {
			fmt.Printf("%s: snoozed (%s limit, %d in use)\n", op, denied.Reason, denied.InUse)
			continue
		}
		if err != nil {
			panic(err)
		}
		defer held.Release(ctx)
		fmt.Printf("%s: calling the registry\n", op)
	}
	// Output:
	// op-1: calling the registry
	// op-2: calling the registry
	// op-3: snoozed (concurrency limit, 2 in use)
}
