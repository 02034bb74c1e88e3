-- A claim reads the signals of a run only once the run counted an event
-- (event_seq > 0; see claimSQL in engine/store.go). Every delivery counts
-- one, and now so does every other way a run is handed signals (a
-- signal-with-start, a continue-as-new, a reset); earlier builds left such
-- a run at 0. An open run holding signals at 0 counts one event.
UPDATE {{schema}}.runs r SET event_seq = 1
FROM (SELECT DISTINCT run_id FROM {{schema}}.signals) g
WHERE r.run_id = g.run_id AND r.event_seq = 0 AND r.status IN ('pending', 'running', 'waiting');
