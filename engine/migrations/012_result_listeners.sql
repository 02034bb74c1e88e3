-- The processes that have Result calls waiting on runs other processes
-- execute. A committer announces the runs it closed (a notification on the
-- done channel) only while a row here is unexpired: with no waiter
-- elsewhere, a close costs no notification, no statement to send it and
-- no read of it in every listening process (see engine/listeners.go).
CREATE TABLE IF NOT EXISTS {{schema}}.result_listeners (
    listener_id text PRIMARY KEY,
    expires_at  timestamptz NOT NULL
);
