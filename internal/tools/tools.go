//go:build tools

// Package tools pins dependencies that later packages use.
package tools

import (
	_ "github.com/jmoiron/sqlx"
	_ "github.com/lib/pq"
	_ "github.com/redis/go-redis/v9"
	_ "github.com/stretchr/testify/require"
	_ "go.opentelemetry.io/otel"
	_ "go.opentelemetry.io/otel/sdk/metric"
	_ "go.opentelemetry.io/otel/sdk/trace"
	_ "go.opentelemetry.io/otel/sdk/trace/tracetest"
	_ "gopkg.in/yaml.v3"
)
