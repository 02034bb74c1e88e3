package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/graftdev/graft/engine"
	"github.com/graftdev/graft/internal/strictdecode"
	"github.com/graftdev/graft/tasks"
)

// serverFile is graft server's configuration file (--config), YAML or JSON
// (by extension), unknown fields refused:
//
//	source:              # the legacy table, as tasks.LoadSource reads it
//	  table: legacy.operations
//	  id: id
//	  kind: kind
//	  kinds: {renew: {workflow: renewal}}
//	  key: {column: domain, transform: tld}
//	  status: {column: status, pending: pending, graft: queued, legacy: running}
//	  input: {domain: domain}
//	intake:              # optional
//	  batch_size: 500
//	  poll_interval: 1s
//	tls:                 # optional: serve HTTPS (--tls-cert, --tls-key)
//	  cert: /etc/graft/server.crt
//	  key: /etc/graft/server.key
//	behind_tls_proxy: false  # optional: --behind-tls-proxy
type serverFile struct {
	// Source, when set, is the legacy table the server's intake takes
	// operations from, and the legacy row GET /v1/operations/{id} shows.
	Source *tasks.Source `json:"source,omitempty" yaml:"source,omitempty"`
	// Intake tunes the intake.
	Intake intakeSection `json:"intake,omitempty" yaml:"intake,omitempty"`
	// TLS, when set, serves HTTPS with this certificate and key (PEM
	// files); --tls-cert and --tls-key win over it.
	TLS tlsSection `json:"tls,omitempty" yaml:"tls,omitempty"`
	// BehindTLSProxy: --behind-tls-proxy.
	BehindTLSProxy bool `json:"behind_tls_proxy,omitempty" yaml:"behind_tls_proxy,omitempty"`
}

// intakeSection is the file's intake: section. (A mistake in the file is
// named by its path there, intake.batch_size, with its line and column:
// internal/strictdecode.)
type intakeSection struct {
	// BatchSize: tasks.IntakeConfig.BatchSize.
	BatchSize int `json:"batch_size,omitempty" yaml:"batch_size,omitempty"`
	// PollInterval: tasks.IntakeConfig.PollInterval, as "1s", "500ms".
	PollInterval string `json:"poll_interval,omitempty" yaml:"poll_interval,omitempty"`
}

// tlsSection is the file's tls: section.
type tlsSection struct {
	Cert string `json:"cert,omitempty" yaml:"cert,omitempty"`
	Key  string `json:"key,omitempty" yaml:"key,omitempty"`
}

// loadServerFile reads and checks a configuration file; errors name the
// file and the field.
func loadServerFile(path string) (*serverFile, error) {
	b, isJSON, err := strictdecode.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("graft server: --config: %w", err)
	}
	decode := strictdecode.YAML
	if isJSON {
		decode = strictdecode.JSON
	}
	var f serverFile
	if err := decode(b, &f); err != nil {
		return nil, fmt.Errorf("graft server: %s: %w", path, err)
	}
	if f.Source != nil {
		f.Source.DeclaredAt = "source" // errors name source.status.pending
		if err := f.Source.Validate(); err != nil {
			return nil, fmt.Errorf("graft server: %s: %w", path, err)
		}
		if f.Source.Key.Func != "" {
			return nil, fmt.Errorf("graft server: %s: source.key.func %q names Go code, which graft server cannot run; use source.key.column, or run the intake in your own binary", path, f.Source.Key.Func)
		}
	}
	if f.Intake.PollInterval != "" {
		if _, err := time.ParseDuration(f.Intake.PollInterval); err != nil {
			return nil, fmt.Errorf("graft server: %s: intake.poll_interval: %w", path, err)
		}
	}
	return &f, nil
}

// startIntake prepares the intake of f.Source. The workflows it starts run
// on the user's workers, not here: its own engine (same database and
// schema, no worker) knows each kind's workflow by name only, taking any
// JSON input, so that the API's engine keeps refusing what it cannot check.
func (f *serverFile) startIntake(ctx context.Context, db *sqlx.DB, schema string, log *slog.Logger) (*tasks.Intake, *engine.Engine, error) {
	e, err := engine.New(engine.Config{DB: db, DatabaseURL: databaseURL(), Schema: schema, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	seen := map[string]bool{}
	for _, k := range f.Source.Kinds {
		if seen[k.Workflow] {
			continue
		}
		seen[k.Workflow] = true
		name := k.Workflow
		if err := e.Register(engine.NewWorkflow(name, func(engine.Context, json.RawMessage) (json.RawMessage, error) {
			return nil, fmt.Errorf("graft server: workflow %s runs on your workers, not in graft server", name)
		})); err != nil {
			e.Close()
			return nil, nil, err
		}
	}
	poll, _ := time.ParseDuration(f.Intake.PollInterval)
	in, err := tasks.NewIntake(ctx, tasks.IntakeConfig{Engine: e, DatabaseURL: databaseURL(), Source: f.Source,
		BatchSize: f.Intake.BatchSize, PollInterval: poll, Logger: log})
	if err != nil {
		e.Close()
		return nil, nil, err
	}
	return in, e, nil
}
