package ratelimit

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestValidateNamesTheBadField(t *testing.T) {
	t.Parallel()
	src := StaticLimits(Limits{})
	for _, tc := range []struct {
		name string
		err  error
		want string // "" = valid
	}{
		{"Limits zero", Limits{}.Validate(), ""},
		{"Limits full", Limits{Concurrency: 5, Rate: 2.5, Burst: 3, LeaseTTL: time.Second}.Validate(), ""},
		{"Limits.Concurrency", Limits{Concurrency: -1}.Validate(), "Limits.Concurrency"},
		{"Limits.Rate negative", Limits{Rate: -1}.Validate(), "Limits.Rate"},
		{"Limits.Rate NaN", Limits{Rate: math.NaN()}.Validate(), "Limits.Rate"},
		{"Limits.Rate Inf", Limits{Rate: math.Inf(1)}.Validate(), "Limits.Rate"},
		{"Limits.Burst", Limits{Burst: -2}.Validate(), "Limits.Burst"},
		{"Limits.LeaseTTL negative", Limits{LeaseTTL: -time.Second}.Validate(), "Limits.LeaseTTL"},
		{"Limits.LeaseTTL tiny", Limits{LeaseTTL: time.Microsecond}.Validate(), "Limits.LeaseTTL"},
		{"RedisConfig minimal", RedisConfig{Limits: src}.Validate(), ""},
		{"RedisConfig.Limits", RedisConfig{}.Validate(), "RedisConfig.Limits"},
		{"RedisConfig.MarkerTTL negative", RedisConfig{Limits: src, MarkerTTL: -1}.Validate(), "RedisConfig.MarkerTTL"},
		{"RedisConfig.MarkerTTL short", RedisConfig{Limits: src, MarkerTTL: time.Second}.Validate(), "RedisConfig.MarkerTTL"},
		{"RedisConfig.PollInterval", RedisConfig{Limits: src, PollInterval: -1}.Validate(), "RedisConfig.PollInterval"},
		{"LocalConfig minimal", LocalConfig{Limits: src}.Validate(), ""},
		{"LocalConfig.Limits", LocalConfig{}.Validate(), "LocalConfig.Limits"},
		{"LocalConfig.PollInterval", LocalConfig{Limits: src, PollInterval: -1}.Validate(), "LocalConfig.PollInterval"},
		{"WorkerLimits zero", WorkerLimits{}.Validate(), ""},
		{"WorkerLimits.MaxConcurrent", WorkerLimits{MaxConcurrent: -1}.Validate(), "WorkerLimits.MaxConcurrent"},
		{"WorkerLimits.PerSecond", WorkerLimits{PerSecond: math.NaN()}.Validate(), "WorkerLimits.PerSecond"},
		{"WorkerLimits.Burst", WorkerLimits{Burst: -1}.Validate(), "WorkerLimits.Burst"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.want == "" {
				require.NoError(t, tc.err)
				return
			}
			require.ErrorContains(t, tc.err, tc.want)
		})
	}
}

func TestConstructorsValidate(t *testing.T) {
	t.Parallel()
	_, err := NewRedisLimiter(nil, RedisConfig{Limits: StaticLimits(Limits{})})
	require.ErrorContains(t, err, "nil client")
	_, err = NewRedisLimiter(newRedisClient(t), RedisConfig{})
	require.ErrorContains(t, err, "RedisConfig.Limits")
	_, err = NewLocalLimiter(LocalConfig{})
	require.ErrorContains(t, err, "LocalConfig.Limits")
	_, err = NewWorkerLimiter(WorkerLimits{MaxConcurrent: -1}, nil)
	require.ErrorContains(t, err, "WorkerLimits.MaxConcurrent")
}

func TestLimitsTable(t *testing.T) {
	t.Parallel()
	var table LimitsTable
	_, err := table.Limits("registry")
	require.ErrorIs(t, err, ErrNoLimits)
	table.SetDefault(Limits{Concurrency: 1})
	table.Set("registry", Limits{Concurrency: 5})
	got, err := table.Limits("registry")
	require.NoError(t, err)
	require.Equal(t, 5, got.Concurrency)
	got, err = table.Limits("other")
	require.NoError(t, err)
	require.Equal(t, 1, got.Concurrency)
	table.Delete("registry")
	got, err = table.Limits("registry")
	require.NoError(t, err)
	require.Equal(t, 1, got.Concurrency)
}
