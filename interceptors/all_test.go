package interceptors_test

import (
	"context"
	"log/slog"
	"os"
	"testing"

	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/interceptors"
)

func TestAllOrder(t *testing.T) {
	t.Parallel()
	mine := engine.ActivityInterceptorFunc(func(ctx context.Context, in *engine.ActivityInput,
		next engine.ActivityNext) (any, error) {
		return next(ctx, in)
	})
	list, err := interceptors.All(interceptors.Config{MeterProvider: sdkmetric.NewMeterProvider()}, mine)
	require.NoError(t, err)
	require.Len(t, list, 3)
	require.True(t, interceptors.IsObserver(list[0]), "tracing, metrics and logging, in one, are outermost")
	require.IsType(t, mine, list[1], "the caller's interceptors come next")
	require.IsType(t, &interceptors.Recovery{}, list[2], "recovery is innermost, next to user code")

	list, err = interceptors.All(interceptors.Config{MeterProvider: sdkmetric.NewMeterProvider()})
	require.NoError(t, err)
	require.Len(t, list, 1, "with nothing between them, the one interceptor recovers too")
	require.True(t, interceptors.IsObserver(list[0]))
}

// All's result goes into the engine's configuration; spans and metrics go
// to the providers given (here SDK providers that a real program would give
// exporters).
func ExampleAll() {
	tp := sdktrace.NewTracerProvider()
	mp := sdkmetric.NewMeterProvider()
	list, err := interceptors.All(interceptors.Config{
		Logger:         slog.New(slog.NewJSONHandler(os.Stderr, nil)),
		LogHeaders:     []string{"customer"},
		TracerProvider: tp,
		MeterProvider:  mp,
	})
	if err != nil {
		panic(err)
	}
	_ = engine.Config{Interceptors: list /* DB, DatabaseURL, ... */}
}
