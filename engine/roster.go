package engine

import (
	"context"
	"slices"
	"time"

	"github.com/lib/pq"
)

// New runs are announced to one worker, not to all.
//
// A notice that new runs are due reaches every process that listens (a
// NOTIFY has no addressee), and every worker used to claim on it: one
// claim took the runs and the others came back empty, each having walked
// the head of the (queue, wake_at) index past the runs in flight (bench
// -workers 4: 0.09-0.11 claims per workflow against 0.017 with one worker
// process). So each worker enrols in the workers table (its queues and
// workflow types; renewed every rosterBeat, removed when it stops), and a
// process that announces new runs names in the notice one live worker that
// serves their queue and every one of their types, each worker in turn.
// Only the named worker claims on it.
//
// The others still see the runs: every claim takes whatever is due, and
// every worker claims at least every PollInterval whether or not a notice
// came. A run announced to a worker that died without removing its row (a
// SIGKILL) therefore waits at most about PollInterval for another (notices
// keep naming the dead worker until its row expires, rosterTTL, a renewal
// interval and rosterSlack after its last renewal, and each process has
// read the roster again, rosterRead), and a worker named while every one
// of its slots is taken hands the notice on to every worker (Worker.loop).
// A live worker whose renewal comes later than that is not named until it
// does (its runs come from its polls and the notices naming nobody or
// another worker): the row's expiry only decides whom notices name. A notice without a name (no worker enrolled, the roster
// unreadable, runs due later, runs given back, older versions) wakes every
// worker as before.

const (
	// rosterBeat is how often a worker renews its row.
	rosterBeat = 5 * time.Second
	// rosterSlack is how late a renewal may come (its statement's wait
	// for a connection and its answer, a pause of the process) before the
	// row expires.
	rosterSlack = 2 * time.Second
	// rosterTTL is how long a worker's row lives unrenewed: one renewal
	// interval and the slack, so a killed worker is named for that long
	// after its last renewal, and rosterRead more (it was three intervals,
	// 15 s: the new runs whose notices named it, one in every live
	// worker's turn, waited about PollInterval for another worker over up
	// to 17 s, 9 s now).
	rosterTTL = rosterBeat + rosterSlack
	// rosterRead is how old a process's copy of the roster may grow
	// before it reads the table again to name a worker.
	rosterRead = 2 * time.Second
)

// workTo separates a work notice's queue (and workDueNow) from the ID of
// the worker it names.
const workTo = "\x1fto="

// enrol writes or renews the worker's row, removes rows that expired long
// ago (workers that died), and returns how many workers are live, this one
// included (committer.pin sizes the process's share of commits by it).
func (s *store) enrol(ctx context.Context, id string, queues, types []string) (int, error) {
	var live int
	err := s.db.QueryRowContext(ctx, `WITH gone AS (DELETE FROM `+s.workers+` WHERE expires_at < now() - interval '1 hour' AND worker_id <> $1),
		up AS (INSERT INTO `+s.workers+` (worker_id, queues, types, expires_at) VALUES ($1, $2, $3, now() + $4::interval)
		ON CONFLICT (worker_id) DO UPDATE SET queues = EXCLUDED.queues, types = EXCLUDED.types, expires_at = EXCLUDED.expires_at)
		SELECT count(*) + 1 FROM `+s.workers+` WHERE expires_at > now() AND worker_id <> $1`,
		id, pq.Array(queues), pq.Array(types), ttlInterval(rosterTTL)).Scan(&live)
	return live, err
}

// leave removes the worker's row.
func (s *store) leave(ctx context.Context, id string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM `+s.workers+` WHERE worker_id = $1`, id)
	return err
}

// enrolled is a live worker's row.
type enrolled struct {
	id            string
	queues, types []string
}

// liveWorkers reads the unexpired rows, by worker ID.
func (s *store) liveWorkers(ctx context.Context) ([]enrolled, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT worker_id, queues, types FROM `+s.workers+` WHERE expires_at > now() ORDER BY worker_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []enrolled
	for rows.Next() {
		var w enrolled
		if err := rows.Scan(&w.id, pq.Array(&w.queues), pq.Array(&w.types)); err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, rows.Err()
}

// roster is a process's copy of the live workers, read again when it is
// rosterRead old, and whose turn it is on each queue. Only the notifier's
// loop uses it.
type roster struct {
	s    *store
	read time.Time
	live []enrolled
	turn map[string]int
}

// pick names the worker that claims new runs of the queue and types: the
// next in turn of the live workers that serve them. "" (none does, or the
// roster could not be read) leaves the notice to every worker.
func (r *roster) pick(queue string, types map[string]bool) string {
	if time.Since(r.read) > rosterRead {
		ctx, cancel := r.s.bounded(5 * time.Second)
		live, err := r.s.liveWorkers(ctx)
		cancel()
		// A failed read names nobody until the next: a name from an old
		// copy may be a worker that is gone.
		r.live, r.read = live, time.Now()
		if err != nil {
			r.live = nil
		}
	}
	var fit []string
	for _, w := range r.live {
		if !slices.Contains(w.queues, queue) {
			continue
		}
		serves := true
		for t := range types {
			if !slices.Contains(w.types, t) {
				serves = false
				break
			}
		}
		if serves {
			fit = append(fit, w.id)
		}
	}
	if len(fit) == 0 {
		return ""
	}
	if r.turn == nil {
		r.turn = map[string]int{}
	}
	i := r.turn[queue] % len(fit)
	r.turn[queue] = i + 1
	return fit[i]
}

// rosterLoop keeps the worker's row live until it stops (Stop removes the
// row once the loop has ended, so that a renewal cannot write it again).
//
// The first renewal comes rosterRead after the worker enrolled, so the
// count of live workers it reads (committer.pin) soon counts the workers
// that started with it, then every rosterBeat.
func (w *Worker) rosterLoop() {
	defer close(w.rosterDone)
	t := time.NewTimer(rosterRead)
	defer t.Stop()
	for {
		select {
		case <-w.stopping:
			return
		case <-w.e.closed:
			return
		case <-t.C:
		}
		t.Reset(rosterBeat)
		ctx, cancel := w.e.store.bounded(w.e.cfg.CommitTimeout)
		live, err := w.e.store.enrol(ctx, w.id, w.cfg.Queues, w.types)
		cancel()
		if err == nil {
			w.e.liveWorkers.Store(int64(live))
		} else {
			// Notices naming it stop when the row expires; its claims
			// (polls and notices naming nobody) go on.
			w.e.cfg.Logger.Warn("engine: renewing the worker's roster row failed", "worker", w.id, "err", err)
		}
	}
}

// leaveRoster removes the worker's row once its renewals have ended, so
// that other processes stop naming it within rosterRead. It gives up when
// stop (Stop's context) ends, at the latest by its deadline: the row
// expires by itself.
func (w *Worker) leaveRoster(stop context.Context) {
	select {
	case <-w.rosterDone:
	case <-stop.Done():
		return
	}
	d := w.e.cfg.CommitTimeout
	if at, ok := stop.Deadline(); ok {
		d = min(d, time.Until(at))
	}
	ctx, cancel := w.e.store.bounded(d)
	defer cancel()
	if err := w.e.store.leave(ctx, w.id); err != nil {
		w.e.cfg.Logger.Warn("engine: removing the worker from the roster failed; it expires", "worker", w.id, "err", err)
	}
}

// pokeNamed wakes the local worker a work notice names, for runs due now;
// a name that is not this process's wakes nobody here.
func (e *Engine) pokeNamed(id string) {
	for _, w := range e.localWorkers() {
		if w.id == id {
			w.named.Store(true)
			w.wakeDue()
		}
	}
}
