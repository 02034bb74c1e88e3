-- Why an operator reset the previous run (ResetOptions.Reason), kept on the
-- run the reset started.
ALTER TABLE {{schema}}.runs ADD COLUMN IF NOT EXISTS reset_reason text;
