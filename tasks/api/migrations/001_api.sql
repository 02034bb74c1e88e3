-- The operations API's own tables, in graft's schema. {{schema}} is replaced
-- by the configured, quoted schema.

-- Bearer tokens. Only the SHA-256 of a token's secret is kept; the secret is
-- shown once, when the token is created.
CREATE TABLE IF NOT EXISTS {{schema}}.api_tokens (
    id           text PRIMARY KEY,
    name         text NOT NULL,
    role         text NOT NULL CHECK (role IN ('admin', 'operator', 'viewer', 'customer')),
    customer     text,
    secret_hash  bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    created_by   text NOT NULL,
    expires_at   timestamptz NOT NULL,
    last_used_at timestamptz,
    revoked_at   timestamptz,
    CHECK ((role = 'customer') = (customer IS NOT NULL))
);

-- Every action taken through the API: who, when, on what, why.
CREATE TABLE IF NOT EXISTS {{schema}}.api_audit (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT now(),
    actor        text NOT NULL,
    token_id     text,
    role         text NOT NULL,
    action       text NOT NULL,
    operation_id text,
    reason       text,
    detail       jsonb
);
CREATE INDEX IF NOT EXISTS api_audit_by_operation ON {{schema}}.api_audit (operation_id, id)
    WHERE operation_id IS NOT NULL;
