-- The key transform of the source that declares a kind (Source.Key.Transform:
-- '' none, 'lower', 'tld'), which its intake records with the kind, so that
-- a process changing a flag (the API server, the UI, the CLI through the
-- API, Go's Flags.Set), which may not know the source's declaration, can
-- refuse a key rule naming a key the transform would change (it could never
-- match). NULL: the source computes its key in Go (Key.Func), or its kind
-- was recorded before this column and its intake has not started since; no
-- key is refused for it.
ALTER TABLE {{schema}}.intake_kinds ADD COLUMN key_transform text;
