-- The bucket threshold a flag gives a key: an operation goes to graft when
-- flag_bucket(kind, id) is below it (0: nothing goes, the switches are off
-- or there is no flag). The flag is JSON ({"killed", "default_percent",
-- "key_rules"}; NULL: no flag), so a preview can ask about a proposed flag.
-- A preview computes it once per key, not per row, and flag_bucket per row.
-- route_with is redefined on it, and TestSQLDecisionMatchesEvaluate holds
-- both to route_decision and tasks.Evaluate.
CREATE FUNCTION {{schema}}.route_threshold(p_global_killed boolean, p_flag jsonb, p_key text) RETURNS int
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
	r jsonb;
	pct numeric;
BEGIN
	IF p_global_killed OR p_flag IS NULL OR COALESCE((p_flag->>'killed')::boolean, false) THEN
		RETURN 0;
	END IF;
	pct := COALESCE((p_flag->>'default_percent')::numeric, 0);
	IF p_key IS NOT NULL AND jsonb_typeof(p_flag->'key_rules') = 'array' THEN
		FOR r IN SELECT value FROM jsonb_array_elements(p_flag->'key_rules') LOOP
			IF (r->'keys') ? p_key THEN
				pct := (r->>'percent')::numeric;
				EXIT;
			END IF;
		END LOOP;
	END IF;
	RETURN round(pct * 100)::int;
END
$$;
