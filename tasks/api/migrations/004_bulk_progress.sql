-- A bulk job's progress, counted as its items leave 'pending', in the
-- transaction that changes them: reading it (a progress bar polls it every
-- fraction of a second) reads a few rows, not every item of the job. Each
-- of a job's concurrent transactions adds to a shard of its own, so they
-- never wait for each other on one row. first_at and last_at bound when
-- items were done or failed, for the job's pace: the start of the first
-- transaction that did (bulk_items.at) and the time the last one recorded
-- its items.
CREATE TABLE IF NOT EXISTS {{schema}}.bulk_progress (
    job_id   text NOT NULL REFERENCES {{schema}}.bulk_jobs (id) ON DELETE CASCADE,
    shard    int NOT NULL,
    done     int NOT NULL DEFAULT 0,
    failed   int NOT NULL DEFAULT 0,
    skipped  int NOT NULL DEFAULT 0,
    first_at timestamptz,
    last_at  timestamptz,
    PRIMARY KEY (job_id, shard)
);
-- Jobs made before this table: counted once from their items.
INSERT INTO {{schema}}.bulk_progress (job_id, shard, done, failed, skipped, first_at, last_at)
SELECT job_id, 0, count(*) FILTER (WHERE state = 'done'), count(*) FILTER (WHERE state = 'failed'),
    count(*) FILTER (WHERE state = 'skipped'),
    min(at) FILTER (WHERE state IN ('done', 'failed')), max(at) FILTER (WHERE state IN ('done', 'failed'))
FROM {{schema}}.bulk_items GROUP BY job_id
ON CONFLICT (job_id, shard) DO NOTHING;
