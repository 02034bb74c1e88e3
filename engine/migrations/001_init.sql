-- graft's own state. {{schema}} is replaced by the configured, quoted schema.
CREATE TABLE IF NOT EXISTS {{schema}}.runs (
    run_id              text PRIMARY KEY,
    workflow_id         text NOT NULL,
    workflow_type       text NOT NULL,
    queue               text NOT NULL,
    status              text NOT NULL,
    input               bytea,
    output              bytea,
    error               jsonb,
    headers             jsonb NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    closed_at           timestamptz,
    wake_at             timestamptz,
    lease_owner         text,
    lease_expires_at    timestamptz,
    event_seq           bigint NOT NULL DEFAULT 0,
    loads               int NOT NULL DEFAULT 0,
    cancel_requested_at timestamptz,
    cancel_reason       text,
    parent_run_id       text,
    parent_seq          int,
    parent_close_policy text,
    previous_run_id     text,
    start_reason        text NOT NULL DEFAULT 'start'
);
-- At most one open run per workflow ID: this is what makes start idempotent.
CREATE UNIQUE INDEX IF NOT EXISTS runs_one_open ON {{schema}}.runs (workflow_id)
    WHERE status IN ('pending', 'running', 'waiting');
CREATE INDEX IF NOT EXISTS runs_claimable ON {{schema}}.runs (queue, wake_at)
    WHERE status IN ('pending', 'waiting');
CREATE INDEX IF NOT EXISTS runs_leased ON {{schema}}.runs (lease_expires_at)
    WHERE status = 'running';
CREATE INDEX IF NOT EXISTS runs_by_workflow ON {{schema}}.runs (workflow_id, created_at);
CREATE INDEX IF NOT EXISTS runs_by_created ON {{schema}}.runs (created_at);
CREATE INDEX IF NOT EXISTS runs_by_parent ON {{schema}}.runs (parent_run_id) WHERE parent_run_id IS NOT NULL;

-- One row per durable step of a run: the record that replay reads.
CREATE TABLE IF NOT EXISTS {{schema}}.steps (
    run_id            text NOT NULL,
    seq               int NOT NULL,
    kind              text NOT NULL,
    name              text NOT NULL,
    status            text NOT NULL,
    input             bytea,
    output            bytea,
    error             jsonb,
    attempts          int NOT NULL DEFAULT 0,
    started_at        timestamptz,
    completed_at      timestamptz,
    fire_at           timestamptz,
    signal_id         bigint,
    child_workflow_id text,
    PRIMARY KEY (run_id, seq)
);

-- Signals are buffered here until the run consumes them (a "signal" step).
CREATE TABLE IF NOT EXISTS {{schema}}.signals (
    id          bigserial PRIMARY KEY,
    run_id      text NOT NULL,
    name        text NOT NULL,
    payload     bytea,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS signals_by_run ON {{schema}}.signals (run_id, id);
