-- A woken run's claim (a waiting run a worker takes) leaves its status
-- waiting and leases it until claimed_until, a column no index reads, so
-- PostgreSQL writes the claim as a heap-only update: no entry in any index
-- of runs (a change of status or of lease_expires_at is one in each, and
-- the entries keyed by workflow ID land on random pages: at a million
-- runs a claim of 100 wakes wrote about 150 full-page images into
-- runs_one_open and runs_by_workflow). The run's first lease renewal marks
-- it running and moves its lease to lease_expires_at.
ALTER TABLE {{schema}}.runs ADD COLUMN IF NOT EXISTS claimed_until timestamptz;
-- A heap-only update needs room on the row's own page, and a claim takes
-- the rows of a page together (they fell due together): half of each page
-- is left free, as for steps. Existing pages keep their layout.
ALTER TABLE {{schema}}.runs SET (fillfactor = 50);
