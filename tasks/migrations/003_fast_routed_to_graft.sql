-- routed_to_graft is the predicate the legacy runner evaluates for every
-- pending row it looks at. It was a SQL function over route_decision (a
-- PL/pgSQL function reading the flag tables with three queries); this one
-- reads both flag tables with a single query and walks the key rules as
-- expressions, which makes it about twice as cheap per row. It decides as
-- route_decision does (TestSQLDecisionMatchesEvaluate holds both to
-- tasks.Evaluate).
CREATE OR REPLACE FUNCTION {{schema}}.routed_to_graft(p_kind text, p_key text, p_id text) RETURNS boolean
LANGUAGE plpgsql STABLE AS $$
DECLARE
	global_killed boolean;
	killed boolean;
	pct numeric;
	rules jsonb;
	r jsonb;
BEGIN
	SELECT s.killed, f.killed, f.default_percent, f.key_rules INTO global_killed, killed, pct, rules
	FROM {{schema}}.flags_state s LEFT JOIN {{schema}}.flags f ON f.kind = p_kind
	WHERE s.id = 1;
	IF global_killed OR killed IS NULL OR killed THEN
		RETURN false; -- global kill switch, no flag, or the kind's kill switch
	END IF;
	IF p_key IS NOT NULL THEN
		FOR i IN 0 .. jsonb_array_length(rules) - 1 LOOP
			r := rules -> i;
			IF (r -> 'keys') ? p_key THEN
				pct := (r ->> 'percent')::numeric;
				EXIT;
			END IF;
		END LOOP;
	END IF;
	RETURN {{schema}}.flag_bucket(p_kind, p_id) < round(pct * 100);
END
$$;
