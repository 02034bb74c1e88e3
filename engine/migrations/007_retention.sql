-- The retention purge reads closed runs oldest first (engine/retention.go).
CREATE INDEX IF NOT EXISTS runs_closed ON {{schema}}.runs (closed_at) WHERE closed_at IS NOT NULL;
