-- Flags, their audit log, the kinds intake sources declare, and the
-- decisions recorded with each claim. {{schema}} is graft's schema.

-- One row: the global kill switch and the version of the whole flag set,
-- bumped by every change. Intake reads it FOR SHARE in each claim
-- transaction; a change takes it FOR UPDATE, so once a change has committed
-- no claim made with the flags before it can still commit.
CREATE TABLE {{schema}}.flags_state (
	id         int PRIMARY KEY CHECK (id = 1),
	version    bigint NOT NULL,
	killed     boolean NOT NULL DEFAULT false,
	updated_at timestamptz NOT NULL DEFAULT now(),
	updated_by text NOT NULL DEFAULT ''
);
INSERT INTO {{schema}}.flags_state (id, version) VALUES (1, 1);

-- Kinds the intake sources declare; a flag may only name one of them.
CREATE TABLE {{schema}}.intake_kinds (
	source   text NOT NULL,
	kind     text NOT NULL,
	workflow text NOT NULL,
	PRIMARY KEY (source, kind)
);

-- One flag per kind. key_rules is a JSON array of {"keys": [...],
-- "percent": p}; the first rule naming the key decides, else
-- default_percent does.
CREATE TABLE {{schema}}.flags (
	kind            text PRIMARY KEY,
	killed          boolean NOT NULL DEFAULT false,
	default_percent numeric(5,2) NOT NULL DEFAULT 0 CHECK (default_percent BETWEEN 0 AND 100),
	key_rules       jsonb NOT NULL DEFAULT '[]',
	version         bigint NOT NULL,
	updated_at      timestamptz NOT NULL DEFAULT now(),
	updated_by      text NOT NULL DEFAULT ''
);

CREATE TABLE {{schema}}.flags_audit (
	id            bigserial PRIMARY KEY,
	kind          text NOT NULL, -- '*' for the global kill switch
	actor         text NOT NULL,
	reason        text NOT NULL,
	old_value     jsonb,
	new_value     jsonb NOT NULL,
	version       bigint NOT NULL, -- the flag's version after the change
	flags_version bigint NOT NULL, -- the flag set's version after the change
	at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX flags_audit_kind ON {{schema}}.flags_audit (kind, id);

-- The decision behind each operation intake routed to graft.
CREATE TABLE {{schema}}.intake_claims (
	operation_id  text NOT NULL,
	source        text NOT NULL,
	kind          text NOT NULL,
	routing_key   text NOT NULL,
	customer      text,
	rule          text NOT NULL,
	bucket        int NOT NULL,
	flags_version bigint NOT NULL,
	workflow_id   text NOT NULL,
	run_id        text NOT NULL,
	claimed_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX intake_claims_operation ON {{schema}}.intake_claims (operation_id);
CREATE INDEX intake_claims_time ON {{schema}}.intake_claims (claimed_at);

-- The bucket of an operation for a flag: 0..9999 from the first 32 bits of
-- md5(flag name || ':' || operation ID). Go computes the same (Bucket).
CREATE FUNCTION {{schema}}.flag_bucket(p_flag text, p_id text) RETURNS int
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
	SELECT (('x' || substr(md5(p_flag || ':' || p_id), 1, 8))::bit(32)::bigint % 10000)::int
$$;

-- The routing decision for one operation, exactly as tasks.Evaluate makes
-- it in Go: route ('graft' or 'legacy'), the rule that decided, the bucket,
-- and the flag set's version.
CREATE FUNCTION {{schema}}.route_decision(p_kind text, p_key text, p_id text,
	OUT route text, OUT rule text, OUT bucket int, OUT flags_version bigint)
LANGUAGE plpgsql STABLE AS $$
DECLARE
	st {{schema}}.flags_state;
	f {{schema}}.flags;
	r jsonb;
	pct numeric;
BEGIN
	SELECT * INTO st FROM {{schema}}.flags_state WHERE id = 1;
	flags_version := st.version;
	bucket := {{schema}}.flag_bucket(p_kind, p_id);
	route := 'legacy';
	IF st.killed THEN
		rule := 'global_kill';
		RETURN;
	END IF;
	SELECT * INTO f FROM {{schema}}.flags WHERE kind = p_kind;
	IF NOT FOUND THEN
		rule := 'no_flag';
		RETURN;
	END IF;
	IF f.killed THEN
		rule := 'kill';
		RETURN;
	END IF;
	rule := 'default';
	pct := f.default_percent;
	FOR r IN SELECT value FROM jsonb_array_elements(f.key_rules) LOOP
		IF p_key IS NOT NULL AND (r->'keys') ? p_key THEN
			rule := 'key';
			pct := (r->>'percent')::numeric;
			EXIT;
		END IF;
	END LOOP;
	IF bucket < round(pct * 100) THEN
		route := 'graft';
	END IF;
END
$$;

-- The legacy runner's one extra predicate: AND NOT routed_to_graft(...).
CREATE FUNCTION {{schema}}.routed_to_graft(p_kind text, p_key text, p_id text) RETURNS boolean
LANGUAGE sql STABLE AS $$
	SELECT (SELECT d.route FROM {{schema}}.route_decision(p_kind, p_key, p_id) d) = 'graft'
$$;
