package pgconn

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDeadlineOfAllocatesNothing pins that reading a WithDeadline deadline,
// which every statement does, allocates nothing (a time.Time given as a
// context value is boxed at each read), and that a context without one
// has none.
func TestDeadlineOfAllocatesNothing(t *testing.T) {
	at := time.Now().Add(time.Minute)
	ctx, cancel := WithDeadline(context.Background(), at)
	defer cancel()
	var got time.Time
	allocs := testing.AllocsPerRun(100, func() { got = deadlineOf(ctx).at })
	require.True(t, got.Equal(at))
	require.Zero(t, allocs)
	require.Nil(t, deadlineOf(context.Background()))
	type key struct{}
	parent := context.WithValue(context.Background(), key{}, "v")
	withParent, cancel2 := WithDeadline(parent, at)
	defer cancel2()
	require.Equal(t, "v", withParent.Value(key{}), "the parent's values stay")
}
