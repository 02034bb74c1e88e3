package main

import (
	"context"

	"github.com/graftdev/graft/engine"
)

// benchExtras are the optional layers a benchmark runs with (-with).
type benchExtras struct {
	o benchOpts
}

func setupExtras(o benchOpts, cfg *engine.Config) (*benchExtras, error) {
	return &benchExtras{o: o}, nil
}

func (x *benchExtras) prepare(ctx context.Context, env *benchEnv) error { return nil }

func (x *benchExtras) headers(i int) engine.Headers { return nil }

func (x *benchExtras) verify(ctx context.Context, env *benchEnv, n int) (string, error) {
	return "", nil
}
