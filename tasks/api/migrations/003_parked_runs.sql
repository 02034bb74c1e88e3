-- The latest top-level runs the engine parked for an operator: failed with
-- an error of type NeedsOperator (engine.ErrorTypeNeedsOperator, e.g. a
-- checkpoint interceptor refused the run's close too many times). Few, so
-- the operations list's needs_operator filter and count read them here,
-- not every failed run.
CREATE INDEX IF NOT EXISTS runs_parked_for_operator ON {{schema}}.runs (created_at) INCLUDE (run_id)
    WHERE status = 'failed' AND (error->>'type') = 'NeedsOperator' AND parent_run_id IS NULL AND NOT superseded;
