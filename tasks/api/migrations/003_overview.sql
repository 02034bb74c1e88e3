-- The overview's time-range queries on closed operations (GetOverview):
-- closed per minute and failures by type read only the window's rows.
CREATE INDEX IF NOT EXISTS runs_by_closed ON {{schema}}.runs (closed_at) WHERE closed_at IS NOT NULL;
