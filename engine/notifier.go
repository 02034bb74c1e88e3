package engine

import (
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lib/pq"
)

// notifier sends the notices of the group committer's transactions (a run
// closed, a run is due for any worker, a run has an event) after they
// commit, in a statement of its own, instead of inside them.
//
// PostgreSQL serializes every transaction that sends a NOTIFY on one lock,
// cluster-wide, held from just before its commit until after it: a
// notifying transaction that wrote rows holds it through its WAL flush. With
// the notices in the checkpoint transactions, the commits of every group
// committer of every worker process queue behind each other one flush at a
// time, and PostgreSQL's own group commit of concurrent flushes is lost; it
// was where -workers spent its time (wait event Lock:object). A transaction
// that sends notices and writes nothing commits without waiting for a flush,
// so it holds the lock only briefly, and the checkpoints commit in parallel.
//
// Notices wait here while a send is in flight, so under load one statement
// carries those of many commits, and a closed run's IDs share notifications
// (comma-joined) so that each listening process reads a few notifications
// per commit rather than one per run. A notice is sent after its commit is
// acknowledged: a process that dies between the two loses it. Nothing
// depends on a notice arriving: workers look for due work every
// PollInterval, a lease renewal refreshes a run whose event counter moved,
// and a Result call waiting on another process's run reads it again after
// resultSafetyPoll.
type notifier struct {
	s   *store
	log func(msg string, args ...any)

	// roster names the worker each queue's notice goes to (roster.go).
	roster roster

	mu      sync.Mutex
	work    map[string]*workNote // queues with new runs
	done    []doneNote           // closed runs
	wake    []string             // runs with an event
	kick    chan struct{}
	stop    chan struct{}
	stopped chan struct{}
	// closed, when set (tests), learns of each closed run the committer
	// reports and whether its close is announced.
	closed atomic.Pointer[func(runID string, announced bool)]
	// named, when set (tests), learns of each work notice sent and the
	// worker it names ("" for every worker).
	named atomic.Pointer[func(queue, worker string)]
}

// workNote is what a queue's next work notice says.
type workNote struct {
	// due: every new run is due now (workDueNow).
	due bool
	// types are the new runs' workflow types: a named worker runs them all.
	types map[string]bool
	// anyone: a named worker could not take them (handOn); every worker
	// claims.
	anyone bool
}

func newNotifier(s *store, log func(msg string, args ...any)) *notifier {
	n := &notifier{s: s, log: log, roster: roster{s: s}, work: map[string]*workNote{}, kick: make(chan struct{}, 1),
		stop: make(chan struct{}), stopped: make(chan struct{})}
	go n.loop()
	return n
}

// committed queues the notices of a committed batch: its closed runs, the
// queues of its new runs that no worker took, and the runs it woke.
func (n *notifier) committed(batch []*writeOp, errs []error, woken []string) {
	n.mu.Lock()
	added := len(woken) > 0
	n.wake = append(n.wake, woken...)
	for i, op := range batch {
		if errs != nil && errs[i] != nil {
			continue
		}
		if op.fin != nil && op.fin.status != StatusWaiting {
			if h := n.closed.Load(); h != nil {
				(*h)(op.runID, !op.fin.quiet)
			}
			if !op.fin.quiet {
				n.done = append(n.done, doneNote{runID: op.runID, fin: op.fin})
				added = true
			}
		}
		if op.newRun != nil && op.newRun.leaseOwner == "" {
			r := &op.newRun.row
			w := n.work[r.Queue]
			if w == nil {
				w = &workNote{due: true, types: map[string]bool{}}
				n.work[r.Queue] = w
			}
			w.due = w.due && (!r.WakeAt.Valid || !r.WakeAt.Time.After(r.CreatedAt))
			w.types[r.WorkflowType] = true
			added = true
		}
	}
	n.mu.Unlock()
	if added {
		select {
		case n.kick <- struct{}{}:
		default:
		}
	}
}

// handOn announces due runs of the queues to every worker: the worker a
// notice named has no slot free for them.
func (n *notifier) handOn(queues []string) {
	n.mu.Lock()
	for _, q := range queues {
		if w := n.work[q]; w != nil {
			w.anyone = true
			continue
		}
		n.work[q] = &workNote{due: true, anyone: true}
	}
	n.mu.Unlock()
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

// close sends what is queued and stops.
func (n *notifier) close() {
	close(n.stop)
	<-n.stopped
}

func (n *notifier) loop() {
	defer close(n.stopped)
	for {
		select {
		case <-n.kick:
			n.flush()
		case <-n.stop:
			n.flush()
			return
		}
	}
}

// workDueNow ends the payload of a work notice (a queue's name) whose new
// runs are all due now: a worker whose claim then finds them taken by
// another need not read the next wake time again (Worker.wakeDue). A notice
// without it (from elsewhere: a run given back, a reset, a delayed start,
// an older version) may bring a later wake time. The unit separator does
// not occur in a queue's name in practice; if it did, that worker would
// only see a later wake time at its next poll.
const workDueNow = "\x1fdue"

// notifyAttempts bounds the tries of one send; past them the notices are
// dropped (see notifier for what stands behind a lost one).
const notifyAttempts = 3

// flush sends the queued notices in one statement.
func (n *notifier) flush() {
	n.mu.Lock()
	work, done, wake := n.work, n.done, n.wake
	if len(work) == 0 && len(done) == 0 && len(wake) == 0 {
		n.mu.Unlock()
		return
	}
	n.work, n.done, n.wake = map[string]*workNote{}, nil, nil
	n.mu.Unlock()
	var chans, payloads []string
	for q, w := range work {
		p, to := q, ""
		if w.due {
			p += workDueNow
			// Runs due later are left to every worker: each reads the
			// next wake time again.
			if !w.anyone {
				to = n.roster.pick(q, w.types)
			}
		}
		if to != "" {
			p += workTo + to
		}
		if h := n.named.Load(); h != nil {
			(*h)(q, to)
		}
		chans, payloads = append(chans, n.s.channel[chanWork]), append(payloads, p)
	}
	for _, p := range joinDone(done) {
		chans, payloads = append(chans, n.s.channel[chanDone]), append(payloads, p)
	}
	for _, p := range joinIDs(wake) {
		chans, payloads = append(chans, n.s.channel[chanWake]), append(payloads, p)
	}
	for attempt := 1; ; attempt++ {
		ctx, cancel := n.s.bounded(10 * time.Second)
		_, err := n.s.db.ExecContext(ctx, `SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS v(c, p)`,
			pq.Array(chans), pq.Array(payloads))
		cancel()
		if err == nil {
			return
		}
		if attempt == notifyAttempts {
			n.log("engine: sending notifications failed; waiters fall back to polling", "notifications", len(chans), "err", err)
			return
		}
		t := time.NewTimer(retryPause(attempt))
		select {
		case <-t.C:
		case <-n.stop:
		}
		t.Stop()
	}
}

// notifyPayloadMax keeps a notification's payload under PostgreSQL's limit
// (8000 bytes).
const notifyPayloadMax = 7000

// joinIDs joins IDs with commas into payloads of at most notifyPayloadMax
// bytes.
func joinIDs(ids []string) []string {
	var out []string
	var b strings.Builder
	for _, id := range ids {
		if b.Len() > 0 && b.Len()+1+len(id) > notifyPayloadMax {
			out = append(out, b.String())
			b.Reset()
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		b.WriteString(id)
	}
	if b.Len() > 0 {
		out = append(out, b.String())
	}
	return out
}
