-- Runs by status, newest last: the operations list counts each status up to
-- a cap by reading this index, not every run.
CREATE INDEX IF NOT EXISTS runs_by_status ON {{schema}}.runs (status, created_at);
