-- The signals each workflow type declares, as the workers that register it
-- published them when they started (see engine/signal_publish.go), so that
-- a process that does not register the type (graft server) can list them
-- and check a payload against its JSON Schema. signals is a JSON array of
-- {name, description, schema, accepts_null, carries}. Two builds that
-- declare a type differently replace each other's row: the last worker to
-- start wins, and published_by / build / published_at say which and when.
CREATE TABLE IF NOT EXISTS {{schema}}.published_signals (
    workflow_type text PRIMARY KEY,
    signals       jsonb NOT NULL,
    published_by  text NOT NULL,
    build         text NOT NULL,
    published_at  timestamptz NOT NULL
);
