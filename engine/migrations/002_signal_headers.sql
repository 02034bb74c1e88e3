-- A signal carries its sender's headers (a trace context, a customer ID),
-- handed to workflow interceptors when the workflow receives it.
ALTER TABLE {{schema}}.signals ADD COLUMN IF NOT EXISTS headers jsonb;
