-- The live workers, each renewed while it claims (see engine/roster.go). A
-- process that announces new runs names one worker from here that serves
-- their queue and types, so one worker claims them instead of every worker
-- of every process (all but one of those claims came back empty).
CREATE TABLE IF NOT EXISTS {{schema}}.workers (
    worker_id  text PRIMARY KEY,
    queues     text[] NOT NULL,
    types      text[] NOT NULL,
    expires_at timestamptz NOT NULL
);
