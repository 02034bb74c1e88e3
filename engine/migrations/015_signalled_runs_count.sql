-- A claim reads the signals of a run only once the run counted an event
-- (event_seq > 0; see claimSQL in engine/store.go). A delivery counts one
-- itself; the other ways a run is handed signals (a signal-with-start's
-- insert, a continue-as-new's or a reset's move) did not, and an older
-- build running beside this one (a rolling deploy) still does not. So the
-- table counts one for the run a signal is written for or moved to.
-- Creating the trigger waits for the signal writers in flight and holds
-- new ones until this commits; then the open runs earlier builds left
-- holding signals at 0 count one event.
CREATE OR REPLACE FUNCTION {{schema}}.signal_counts_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE {{schema}}.runs SET event_seq = 1 WHERE run_id = NEW.run_id AND event_seq = 0;
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS signal_counts_run ON {{schema}}.signals;
CREATE TRIGGER signal_counts_run AFTER INSERT OR UPDATE OF run_id ON {{schema}}.signals
    FOR EACH ROW EXECUTE FUNCTION {{schema}}.signal_counts_run();
UPDATE {{schema}}.runs r SET event_seq = 1
FROM (SELECT DISTINCT run_id FROM {{schema}}.signals) g
WHERE r.run_id = g.run_id AND r.event_seq = 0 AND r.status IN ('pending', 'running', 'waiting');
