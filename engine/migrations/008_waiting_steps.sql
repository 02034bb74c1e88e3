-- Activity steps waiting for their next attempt (a retry's backoff, a
-- limiter's snooze): few at any time, found without a scan of every step.
-- Its predicate's column is NULL on the hot path, so an activity's start
-- updated in place by its outcome stays a heap-only update.
CREATE INDEX IF NOT EXISTS steps_waiting ON {{schema}}.steps (run_id) WHERE next_attempt_at IS NOT NULL;
