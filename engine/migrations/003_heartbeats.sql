-- The last heartbeat details of each activity step in flight, saved at most
-- about once a second, so an attempt that follows a crash can resume from
-- them (engine.HeartbeatDetails).
CREATE TABLE IF NOT EXISTS {{schema}}.heartbeats (
    run_id      text NOT NULL,
    seq         int NOT NULL,
    details     bytea NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq)
);
