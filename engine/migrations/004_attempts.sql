-- Every attempt of an activity step is kept. The step's row describes its
-- current (or last) attempt: attempts is its number, attempt_started_at its
-- start. An attempt that ended and was followed by another (a retry, or an
-- attempt lost with its worker) is appended to attempt_log, so a step that
-- succeeds at once writes no log. A step waiting for its next attempt (a
-- retry's backoff, a limiter's snooze) records when it is due in
-- next_attempt_at, so a crash restarts neither the retry policy nor the wait.
ALTER TABLE {{schema}}.steps ADD COLUMN IF NOT EXISTS attempt_started_at timestamptz;
ALTER TABLE {{schema}}.steps ADD COLUMN IF NOT EXISTS next_attempt_at timestamptz;
ALTER TABLE {{schema}}.steps ADD COLUMN IF NOT EXISTS attempt_log jsonb;
-- An activity's start is updated in place by its outcome: free room in each
-- page lets PostgreSQL make that a heap-only update (no new index entry).
ALTER TABLE {{schema}}.steps SET (fillfactor = 85);
