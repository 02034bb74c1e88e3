-- A run is superseded once a newer run of its workflow ID exists (a start
-- that reused the ID, a continue-as-new, a reset). The engine marks the
-- older run when it makes the newer one, so "the latest run of each
-- workflow" is a column, not a scan for a newer run.
ALTER TABLE {{schema}}.runs ADD COLUMN IF NOT EXISTS superseded boolean NOT NULL DEFAULT false;
UPDATE {{schema}}.runs r SET superseded = true
WHERE NOT r.superseded AND EXISTS (SELECT 1 FROM {{schema}}.runs n WHERE n.workflow_id = r.workflow_id
    AND (n.created_at, n.run_id) > (r.created_at, r.run_id));
-- The latest top-level runs by status, newest last, carrying the columns
-- the operations list filters and counts on (kind; wake_at tells a run that
-- waits for a signal) and its keyset's tie-break (run_id), so a count per
-- status, and a page of one status, read this index alone (a count up to
-- a cap). It replaces runs_by_status (migration 009). Its columns change
-- only where the run's status changes (never a heap-only update: status is
-- in runs_one_open's predicate), so it costs no HOT update.
CREATE INDEX IF NOT EXISTS runs_latest_by_status ON {{schema}}.runs (status, created_at) INCLUDE (workflow_type, wake_at, run_id)
    WHERE parent_run_id IS NULL AND NOT superseded;
DROP INDEX IF EXISTS {{schema}}.runs_by_status;
-- Steps whose last attempt failed, by name: few (the failure path), so the
-- operations list finds the runs whose compensation report failed (they
-- need an operator) without reading every run. error only changes on the
-- failure path, so an activity's start updated in place by its success
-- stays a heap-only update.
CREATE INDEX IF NOT EXISTS steps_failed_by_name ON {{schema}}.steps (name) WHERE error IS NOT NULL;
