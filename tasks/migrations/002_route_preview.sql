-- The routing decision under a proposed flag, for previews of a change
-- (Intake.PreviewFlag): route_decision's logic with the flag given as JSON
-- ({"killed", "default_percent", "key_rules"}; NULL: the kind has no flag)
-- and the global kill switch as an argument, instead of read from the
-- tables. TestRouteWithMatchesRouteDecision holds the two to the same
-- answers, and to tasks.Evaluate.
CREATE FUNCTION {{schema}}.route_with(p_global_killed boolean, p_flag jsonb, p_kind text, p_key text, p_id text,
	OUT route text, OUT rule text, OUT bucket int)
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
	r jsonb;
	pct numeric;
BEGIN
	bucket := {{schema}}.flag_bucket(p_kind, p_id);
	route := 'legacy';
	IF p_global_killed THEN
		rule := 'global_kill';
		RETURN;
	END IF;
	IF p_flag IS NULL THEN
		rule := 'no_flag';
		RETURN;
	END IF;
	IF COALESCE((p_flag->>'killed')::boolean, false) THEN
		rule := 'kill';
		RETURN;
	END IF;
	rule := 'default';
	pct := COALESCE((p_flag->>'default_percent')::numeric, 0);
	FOR r IN SELECT value FROM jsonb_array_elements(CASE jsonb_typeof(p_flag->'key_rules') WHEN 'array' THEN p_flag->'key_rules' ELSE '[]' END) LOOP
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
