-- A bulk relaunch's from_step: each operation is relaunched from the first
-- step of this name, as a single relaunch's from_step does (NULL: from
-- before its last failed activity).
ALTER TABLE {{schema}}.bulk_jobs ADD COLUMN IF NOT EXISTS from_step text;
