package engine_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/testenv"
)

// ptIn and ptOut lose their unexported field in a JSON round trip.
type ptIn struct {
	A      int
	hidden int
}

type ptOut struct {
	B      int
	hidden int
}

// A live activity and its workflow see its input and result as a replay
// would, decoded from the record, also where the engine hands values on
// undecoded: a field the encoding drops is zero on both sides, and plain
// values arrive equal.
func TestLiveActivitySeesWhatReplaySees(t *testing.T) {
	t.Parallel()
	act := engine.NewActivity("pt.act", func(_ context.Context, in ptIn) (ptOut, error) {
		return ptOut{B: in.A + in.hidden*100, hidden: 9}, nil
	})
	plain := engine.NewActivity("pt.plain", func(_ context.Context, n [2]int) ([2]int, error) { return [2]int{n[1], n[0]}, nil })
	wf := engine.NewWorkflow("pt.wf", func(ctx engine.Context, _ struct{}) ([3]int, error) {
		out, err := act.Run(ctx, ptIn{A: 1, hidden: 5})
		if err != nil {
			return [3]int{}, err
		}
		p, err := plain.Run(ctx, [2]int{1, 2})
		return [3]int{out.B*10 + out.hidden, p[0], p[1]}, err
	})
	e := testenv.Engine(t, nil)
	require.NoError(t, e.Register(act, plain, wf))
	testenv.Worker(t, e, engine.WorkerConfig{})
	ctx := testenv.Ctx(t, 60*time.Second)
	run, err := wf.Start(ctx, e.Client(), struct{}{}, nil)
	require.NoError(t, err)
	out, err := run.Result(ctx)
	require.NoError(t, err)
	require.Equal(t, [3]int{10, 2, 1}, out, "the activity saw hidden=5 or the workflow saw hidden=9: not what a replay sees")
}
