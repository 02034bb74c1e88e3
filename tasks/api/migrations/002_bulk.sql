-- Bulk jobs: one row per job, one row per operation it covers. An item's
-- outcome is written in the transaction that acts on its operation, so a
-- job resumed after a crash never acts on an operation twice.
CREATE TABLE IF NOT EXISTS {{schema}}.bulk_jobs (
    id          text PRIMARY KEY,
    action      text NOT NULL CHECK (action IN ('relaunch', 'cancel', 'signal')),
    filter      jsonb NOT NULL,
    exclude     jsonb,
    signal      jsonb,
    rate        double precision NOT NULL CHECK (rate > 0),
    reason      text NOT NULL,
    actor       text NOT NULL,
    token_id    text,
    role        text NOT NULL,
    customer    text,
    -- running, paused, stopped or completed, as the job's workflow last set it.
    state       text NOT NULL DEFAULT 'running',
    -- pause or stop, as asked through the API and not yet undone.
    requested   text,
    retry_of    text,
    total       int NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX IF NOT EXISTS bulk_jobs_by_customer ON {{schema}}.bulk_jobs (customer, created_at DESC) WHERE customer IS NOT NULL;

CREATE TABLE IF NOT EXISTS {{schema}}.bulk_items (
    job_id       text NOT NULL REFERENCES {{schema}}.bulk_jobs (id) ON DELETE CASCADE,
    operation_id text NOT NULL,
    seq          int NOT NULL,
    -- The run the job found when it was created: another run later means the
    -- operation was relaunched meanwhile.
    run_id       text NOT NULL,
    state        text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed', 'skipped')),
    detail       text,
    new_run_id   text,
    at           timestamptz,
    PRIMARY KEY (job_id, operation_id)
);
CREATE INDEX IF NOT EXISTS bulk_items_order ON {{schema}}.bulk_items (job_id, seq);
CREATE INDEX IF NOT EXISTS bulk_items_pending ON {{schema}}.bulk_items (job_id, seq) WHERE state = 'pending';
