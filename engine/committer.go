package engine

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"hash/fnv"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/graftdev/graft/internal/pgconn"
)

// writeOp is one durable change submitted to the group committer. Many ops
// from many runs share one transaction; an op's done callback runs after that
// transaction commits or fails.
type writeOp struct {
	// runID picks the shard, so one run's ops commit in submission order,
	// unless the run state that writes it pinned one (sh).
	runID string
	// sh, when set, is the shard of the loaded run that writes the op
	// (committer.pin).
	sh *commitShard
	// owner is the lease owner that must still hold runID ("" = unfenced,
	// for client writes), under the claim numbered token (the run's loads
	// counter when it was claimed): a copy of the run that outlived its
	// lease cannot write even when the same worker claimed the run again.
	owner string
	token int
	// abandoned, when set, is the writing run state's: once it is closed
	// the op is refused unwritten. A run dropped after a failed write is
	// released at once and its worker may claim it again under the same
	// owner; its earlier state's writes still queued behind the failed
	// one must not then pass the owner fence.
	abandoned <-chan struct{}

	newRun *newRunSpec
	// steps are step records of runID, in the order they were written; a
	// later record of a step replaces an earlier one (an activity's start,
	// then its outcome).
	steps   []*stepRow
	fin     *finishSpec
	events  []*CheckpointEvent
	done    func(error)
	started time.Time

	// state is opQueued, opWriting or opWithdrawn: a submitter whose
	// context ends takes a queued op back, so that what it reports (not
	// written) stays true; an op being written is waited for.
	state atomic.Int32
}

func (op *writeOp) fence() fence { return fence{op.owner, op.token} }

// The states of a writeOp.
const (
	opQueued int32 = iota
	opWriting
	opWithdrawn
)

// newRunSpec inserts a run (start, child start, continue-as-new).
type newRunSpec struct {
	row runRow
	// reuse is the ID reuse policy checked against closed runs.
	reuse IDReusePolicy
	// leaseOwner, when set, starts the run already leased (eager start).
	leaseOwner string
	// asleep: an eager start whose run unloaded before its insert went
	// out is inserted waiting (due at row.WakeAt) instead of running, with
	// leaseOwner as its last owner, as its unload would have left it.
	asleep bool
	// childStep, when set, is the parent's step recording this child start;
	// it is written only when the child insert succeeds, and otherwise as a
	// failed step.
	childStep *stepRow
	// signal, when set, is buffered for the new run in the transaction that
	// creates it (signal-with-start).
	signal *startSignal
}

// startSignal is a signal delivered with a start.
type startSignal struct {
	name    string
	payload []byte
	headers []byte // the sender's, as JSON; nil for none
}

// finishSpec moves a running run to waiting or to a closed status.
type finishSpec struct {
	status Status
	output []byte
	// live is the workflow's result that output encodes (completed runs).
	live          any
	errJSON       []byte
	wakeAt        time.Time
	knownEventSeq int64
	// workflowID is the run's; a batch that starts the same ID again
	// writes this transition first (see stepsAndFinishOnly).
	workflowID string
	// hasChildren asks to cancel the run's open children with the "cancel"
	// close policy; most runs have none, so the statement is skipped.
	hasChildren bool
	// hasTimers: the run recorded a timer, which may not have fired when
	// the run closes (see abandonTimersSQL); most runs have none, and
	// their steps are then not read.
	hasTimers bool
	// parent, when set, receives the result into its child step.
	parentRunID string
	parentSeq   int
	// quiet: the commit that closed the run saw no process waiting on
	// closes elsewhere, and was quick enough that none that registered
	// meanwhile can miss it (see listeners.go): its close is not
	// announced. Set by each write of the op that allows it.
	quiet bool
}

type committer struct {
	e      *Engine
	shards []*commitShard
	wg     sync.WaitGroup
	stop   chan struct{}
	// releases are runs given back after a failed write, released in
	// batches off the shards' goroutines (see releaseLoop).
	releases chan release
	relStop  chan struct{}
	relDone  chan struct{}
	// lostAck, when set (tests), is asked after each commit whether to
	// report it as a lost connection instead, as if the acknowledgement of
	// COMMIT never arrived.
	lostAck atomic.Pointer[func() bool]
	// beforeExec, when set (tests), runs before each attempt to write a
	// batch, once its ops are taken for writing.
	beforeExec atomic.Pointer[func()]
	// queued, when set (tests), runs when submitWait has queued its op.
	queued atomic.Pointer[func()]
	// missListeners, when set (tests), makes the commit statements report
	// no process waiting on closes elsewhere, as a statement whose
	// snapshot came before the registration does.
	missListeners atomic.Bool
}

// commitShard is one group-commit writer: a queue of ops written in batches,
// one batch at a time and in queue order, so the ops of one run (which all
// go to the same shard) commit in the order they were submitted.
//
// A batch is written by the shard's loop goroutine, or, when the shard is
// idle (nothing queued, nothing being written), by the submitter that waits
// for its op: it takes the writer's role and writes its op in place. At low
// load that is most commits, and each then costs no hand-off to the loop
// and back; under load the shard is busy and ops queue and batch as before.
type commitShard struct {
	mu    sync.Mutex
	queue []*writeOp
	// writing: a batch of the shard is being written, by the loop or in
	// place by a submitter; idle is signalled when it ends.
	writing bool
	idle    *sync.Cond
	// closed: the committer is stopping and the loop writes what is left;
	// nothing is written in place any more.
	closed bool
	// ready wakes the loop: the queue may have ops it can take.
	ready chan struct{}
	// space bounds the queue (one token per queued op): a run's writes are
	// the worker's backpressure.
	space chan struct{}
	// runs counts the loaded runs pinned here (committer.pin).
	runs atomic.Int64
	// last is the size of the batch written last (see batchFull).
	last int
	// params is the memory the writer builds its statements' arguments
	// in; whoever writes a batch of the shard (its loop, or a submitter
	// that claimed it) has it to itself.
	params paramBuf
}

func newCommitter(e *Engine) *committer {
	c := &committer{e: e, stop: make(chan struct{}), releases: make(chan release, 4*e.cfg.MaxBatch),
		relStop: make(chan struct{}), relDone: make(chan struct{})}
	go c.releaseLoop()
	for i := 0; i < e.cfg.CommitShards; i++ {
		sh := &commitShard{ready: make(chan struct{}, 1), space: make(chan struct{}, 4*e.cfg.MaxBatch)}
		sh.idle = sync.NewCond(&sh.mu)
		c.shards = append(c.shards, sh)
		c.wg.Add(1)
		go c.loop(sh)
	}
	return c
}

// shardRuns is how many loaded runs a process writes through one shard
// before it spreads them over all (committer.pin), per live worker.
const shardRuns = 64

// shardWorkersMax bounds the live workers pin counts: the roster holds
// idle workers and those of other queues too, and a process that carries
// most of the load among many such must still spread its runs (one with
// 512 on one shard lost a third of its throughput). Four times shardRuns
// is where one process with 256 runs lost 12% against two shards.
const shardWorkersMax = 4

// pin picks the shard a loaded run writes through, for as long as it is
// loaded (its ops then commit in submission order): the first while the
// process has fewer than shardRuns runs pinned for each live worker of the
// roster, else the one with the fewest. A process with few runs in flight
// so uses one shard: its batches are each shard's share of its runs'
// writes, and spread over two shards they were half as large, twice as
// many commits for the same work. bench -workers 4 (about 128 runs per
// worker process at -c 512) made 0.22 group commits per workflow with two
// shards each against 0.10 with one worker process, and -shards 1 halved
// them at equal throughput; one process with 512 runs lost a third of its
// throughput with one shard, and one with 256 (bench -c 256 -with mirror,
// in-process) 12% against two. The threshold grows with the live workers
// of the roster: each process's share of the load, and of the commits
// PostgreSQL takes in parallel, shrinks with their number. At 64 whatever
// their number, bench -workers 4 -c 512 spread each process's 128 runs over
// both shards: eight writers, 0.21 group commits per workflow against 0.10
// for one worker process; at 64 per live worker, four writers, 0.15, and
// PostgreSQL's and the processes' CPU per workflow fell (three alternated
// rounds: 321-341 against 358-419 µs and 268-281 against 292-310 µs). Past
// the threshold the runs are spread evenly.
func (c *committer) pin() *commitShard {
	best, total := c.shards[0], int64(0)
	for _, sh := range c.shards {
		n := sh.runs.Load()
		total += n
		if n < best.runs.Load() {
			best = sh
		}
	}
	if !c.spread(total) {
		best = c.shards[0]
	}
	best.runs.Add(1)
	return best
}

// spread reports whether a process with total runs pinned writes through
// all its shards rather than the first (see pin).
func (c *committer) spread(total int64) bool {
	return total >= shardRuns*min(max(1, c.e.liveWorkers.Load()), shardWorkersMax)
}

// pinned is how many loaded runs the process has pinned to its shards.
func (c *committer) pinned() int64 {
	var total int64
	for _, sh := range c.shards {
		total += sh.runs.Load()
	}
	return total
}

// unpin ends a run's pin on sh.
func (c *committer) unpin(sh *commitShard) { sh.runs.Add(-1) }

// shard is the shard op is written through: its run's pin, or for a
// client's write (a start that no local worker took: each one is a new
// run, awaited by its caller) the first shard while the process's runs are
// not spread (see pin). A process that only starts workflows so makes one
// writer's commits, each of more starts: with its starts hashed over two
// shards, bench -n 50000 -c 512 -workers 4 made 0.035 start commits a
// workflow against 0.014 with one, each named to a worker that claimed
// for it (claims 0.033 against 0.015), and PostgreSQL's CPU a workflow
// was 378-435 µs against 324-347 (-workers 1: 317-336 against 286-288).
func (c *committer) shard(op *writeOp) *commitShard {
	op.started = time.Now()
	if op.sh != nil {
		return op.sh
	}
	if op.owner == "" && !c.spread(c.pinned()) {
		return c.shards[0]
	}
	h := fnv.New32a()
	h.Write([]byte(op.runID))
	return c.shards[int(h.Sum32())%len(c.shards)]
}

// submit queues op, waiting for room in its shard: a run's writes are the
// worker's backpressure.
func (c *committer) submit(op *writeOp) {
	_ = c.shard(op).enqueue(context.Background(), op)
}

// claimOrQueue hands op to its shard. When the shard is idle, it is not
// queued: the shard is held for the caller, who must write it with
// writeClaimed (after releasing any lock that orders its submissions: the
// shard's later ops wait behind it meanwhile) and gets the shard back.
func (c *committer) claimOrQueue(op *writeOp) *commitShard {
	sh := c.shard(op)
	if sh.claim() {
		return sh
	}
	_ = sh.enqueue(context.Background(), op)
	return nil
}

// writeClaimed writes op, for which claimOrQueue returned sh, in place.
func (c *committer) writeClaimed(sh *commitShard, op *writeOp) {
	c.run(&sh.params, []*writeOp{op})
	sh.release()
}

// submitWait submits op and waits for its outcome. When ctx ends first, the
// op is taken back if it is still queued (ctx's error then means it was not
// written); if it is being written, its outcome is awaited, so the caller
// never reports as failed a write that happened.
func (c *committer) submitWait(ctx context.Context, op *writeOp) error {
	ch := make(chan error, 1)
	prev := op.done
	op.done = func(err error) {
		if prev != nil {
			prev(err)
		}
		ch <- err
	}
	sh := c.shard(op)
	if sh.claim() {
		c.writeClaimed(sh, op)
		return <-ch
	}
	if err := sh.enqueue(ctx, op); err != nil {
		return err
	}
	if h := c.queued.Load(); h != nil {
		(*h)()
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		if op.state.CompareAndSwap(opQueued, opWithdrawn) {
			return ctx.Err()
		}
		return <-ch
	}
}

// batchFull is the shard's batching rule: n ops make a batch worth
// writing now when they are as many as the shard's last batch held
// (last). The runs a batch carried submit their next ops one after
// another as they are woken, so the next batch is expected to be as
// large; a batch of one says the load has gone. Two places apply it:
//   - claim: an op is written alone in place only when one op is a full
//     batch. After a batch of several, the first run woken found the
//     shard idle and wrote its op alone, and the others queued behind it
//     for the next batch: bench -workers 4 -c 512 (one shard and one core
//     per worker process) made a third of its commits so, of one op each
//     (one worker process: 4%). Queued instead, the op goes out with the
//     others.
//   - gather: the loop yields before it takes a batch while the queue is
//     not a full batch (and still grows).
func batchFull(n, last int) bool { return n >= last }

// startWrite marks the shard as being written, by a batch of n ops
// (sh.mu held).
func (sh *commitShard) startWrite(n int) { sh.writing, sh.last = true, n }

// claim makes the caller the shard's writer if the shard is idle and its
// op alone is a full batch (batchFull).
func (sh *commitShard) claim() bool {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.writing || sh.closed || len(sh.queue) > 0 || !batchFull(1, sh.last) {
		return false
	}
	sh.startWrite(1)
	return true
}

// gatherYields bounds the yields of one gather.
const gatherYields = 8

// gather lets the runs that the shard's last batch woke submit their next
// ops before the loop takes a batch, while the queue is not a full batch
// (batchFull): it yields the processor, and goes on yielding while the
// queue grows (it stops at the second yield in a row that brought no op: a
// yield may come straight back, when the scheduler serves its global queue
// first). With one core per process (bench -workers 4: GOMAXPROCS=1, one
// shard each) a yield runs every goroutine waiting for it; without it the
// loop took what was queued the moment it woke (often one op, from the
// first run woken) or the moment a batch ended (the runs that batch woke
// not yet run), and the runs of one batch were spread over two or more.
func (sh *commitShard) gather() {
	sh.mu.Lock()
	n, want := len(sh.queue), sh.last
	sh.mu.Unlock()
	idle := 0
	for range gatherYields {
		if batchFull(n, want) || idle == 2 {
			return
		}
		runtime.Gosched()
		sh.mu.Lock()
		m := len(sh.queue)
		sh.mu.Unlock()
		if m == n {
			idle++
		} else {
			idle = 0
		}
		n = m
	}
}

// release ends a write in place, waking the loop for what was queued
// meanwhile.
func (sh *commitShard) release() {
	sh.mu.Lock()
	sh.writing = false
	more := len(sh.queue) > 0
	sh.idle.Broadcast()
	sh.mu.Unlock()
	if more {
		sh.wake()
	}
}

func (sh *commitShard) wake() {
	select {
	case sh.ready <- struct{}{}:
	default:
	}
}

// enqueue queues op once there is room, or gives up (op not queued) when
// ctx ends first.
func (sh *commitShard) enqueue(ctx context.Context, op *writeOp) error {
	select {
	case sh.space <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	sh.mu.Lock()
	sh.queue = append(sh.queue, op)
	busy := sh.writing
	sh.mu.Unlock()
	if !busy {
		sh.wake() // otherwise the writer looks at the queue when it is done
	}
	return nil
}

// take takes up to max queued ops for the loop to write, unless the shard
// is being written.
func (sh *commitShard) take(max int) []*writeOp {
	sh.mu.Lock()
	if sh.writing || len(sh.queue) == 0 {
		sh.mu.Unlock()
		return nil
	}
	n := min(len(sh.queue), max)
	batch := sh.queue[:n:n]
	if n == len(sh.queue) {
		sh.queue = nil
	} else {
		sh.queue = sh.queue[n:]
	}
	sh.startWrite(n)
	sh.mu.Unlock()
	sh.freeSpace(n)
	return batch
}

// freeSpace gives back the queue room of n ops taken off the queue.
func (sh *commitShard) freeSpace(n int) {
	for range n {
		<-sh.space
	}
}

// doneWriting ends the loop's write of a batch.
func (sh *commitShard) doneWriting() {
	sh.mu.Lock()
	sh.writing = false
	sh.idle.Broadcast()
	sh.mu.Unlock()
}

// closeAndTake closes the shard to writes in place, waits for one under
// way, and takes what is queued.
func (sh *commitShard) closeAndTake() []*writeOp {
	sh.mu.Lock()
	sh.closed = true
	for sh.writing {
		sh.idle.Wait()
	}
	batch := sh.queue
	sh.queue = nil
	sh.mu.Unlock()
	sh.freeSpace(len(batch))
	return batch
}

func (c *committer) close() {
	close(c.stop)
	c.wg.Wait()
	close(c.relStop)
	<-c.relDone
}

// stopping reports whether close has begun.
func (c *committer) stopping() bool {
	select {
	case <-c.stop:
		return true
	default:
		return false
	}
}

// pause waits before attempt n+1 of a failed write; it is cut short when
// the committer stops.
func (c *committer) pause(n int) {
	t := time.NewTimer(retryPause(n))
	defer t.Stop()
	select {
	case <-t.C:
	case <-c.stop:
	}
}

func (c *committer) loop(sh *commitShard) {
	defer c.wg.Done()
	for {
		select {
		case <-sh.ready:
		case <-c.stop:
			// Write what is queued, then stop.
			for _, op := range sh.closeAndTake() {
				c.run(&sh.params, []*writeOp{op})
			}
			return
		}
		sh.gather()
		for {
			batch := sh.take(c.e.cfg.MaxBatch)
			if batch == nil {
				break
			}
			c.run(&sh.params, batch)
			sh.doneWriting()
			sh.gather()
		}
	}
}

// run commits a batch. A database fault (a lost connection, a restart, a
// deadlock) is retried with a growing pause, after reading back whether the
// failed attempt committed after all; any other failure of the batch as a
// whole is retried op by op, so one bad op cannot sink its neighbours. The
// statements build their arguments in p, the writing shard's.
func (c *committer) run(p *paramBuf, batch []*writeOp) {
	for attempt := 1; ; attempt++ {
		if batch = c.take(batch); len(batch) == 0 {
			return
		}
		if h := c.beforeExec.Load(); h != nil {
			(*h)()
		}
		for _, op := range batch {
			if op.fin != nil {
				op.fin.quiet = false // announced unless this write says otherwise
			}
		}
		errs, err := c.exec(p, batch)
		fault := classify(err)
		if fault != faultNone {
			var nc *notCommitted
			if !errors.As(err, &nc) {
				// The commit may have happened: look.
				if committed, rerrs := c.readBack(batch); committed {
					errs, err, fault = rerrs, nil, faultNone
				}
			}
		}
		if err == nil {
			for i, op := range batch {
				if op.done != nil {
					op.done(errs[i])
				}
			}
			c.e.afterCommit(batch, errs)
			c.e.notes.committed(batch, errs, nil)
			return
		}
		c.giveBack(batch)
		retry := fault == faultConnection || (fault == faultContention && attempt < contentionRetries)
		if retry && !c.stopping() {
			c.e.cfg.Logger.Warn("engine: commit failed; retrying", "ops", len(batch), "attempt", attempt, "err", err)
			c.pause(attempt)
			continue
		}
		if len(batch) > 1 {
			for _, op := range batch {
				c.run(p, []*writeOp{op})
			}
			return
		}
		if op := batch[0]; op.state.CompareAndSwap(opQueued, opWriting) && op.done != nil {
			op.done(c.recordRefusal(p, op, err))
		}
		return
	}
}

// take marks the ops of batch as being written and returns them, less the
// ones nobody waits for any more: withdrawn by their submitter, or written
// by a run state this worker has abandoned.
func (c *committer) take(batch []*writeOp) []*writeOp {
	live := batch[:0:0]
	for _, op := range batch {
		if !op.state.CompareAndSwap(opQueued, opWriting) {
			continue
		}
		if op.abandoned != nil {
			select {
			case <-op.abandoned:
				if op.done != nil {
					op.done(errLeaseLost)
				}
				continue
			default:
			}
		}
		live = append(live, op)
	}
	return live
}

// giveBack returns the ops of a batch that was not written to the queued
// state, so a submitter that gives up meanwhile can withdraw its op.
func (c *committer) giveBack(batch []*writeOp) {
	for _, op := range batch {
		op.state.Store(opQueued)
	}
}

// exec runs one transaction for the batch. It returns a per-op error (for ops
// that were fenced or refused) or an error for the whole batch.
func (c *committer) exec(p *paramBuf, batch []*writeOp) ([]error, error) {
	ctx, cancel := c.e.store.bounded(c.e.cfg.CommitTimeout)
	defer cancel()
	sent := time.Now()
	errs, err := c.execCtx(ctx, p, batch)
	if pgconn.Unsent(ctx, err) {
		// The failed statement reached no connection: it waited for one
		// until its deadline (see store.bounded). Any statement before it
		// (a refused fold, see execStepsAndFinish; a preparation)
		// committed nothing.
		err = &notCommitted{&poolWait{err}}
	}
	if err == nil {
		if h := c.lostAck.Load(); h != nil && (*h)() {
			errs, err = nil, driver.ErrBadConn
		}
	}
	if err != nil || time.Since(sent) >= quietCloseBound {
		// A waiter that registered after the statement's snapshot may
		// have read its runs open too long ago, and a batch whose commit
		// is read back is announced as before: announce them.
		for _, op := range batch {
			if op.fin != nil {
				op.fin.quiet = false
			}
		}
	}
	return errs, err
}

func (c *committer) execCtx(ctx context.Context, p *paramBuf, batch []*writeOp) (_ []error, err error) {
	s := c.e.store
	now := c.e.cfg.Clock.Now()
	if c.stepsAndFinishOnly(batch) {
		return c.execStepsAndFinish(ctx, p, now, batch)
	}
	errs := make([]error, len(batch))
	committing := false

	// A batch that needs one statement runs without BEGIN/COMMIT round trips.
	var tx dbtx = c.e.db
	var realTx *sql.Tx
	if !c.singleStatement(batch) {
		t, err := c.e.db.BeginTx(ctx, nil)
		if err != nil {
			return nil, &notCommitted{err}
		}
		defer t.Rollback()
		tx, realTx = t, t
		// Until COMMIT is sent, a failure means nothing was written.
		defer func() {
			if err != nil && !committing {
				err = &notCommitted{err}
			}
		}()
	}

	// 0a. A batch whose closing runs wake their parents or cancel their
	// children writes two sets of runs, each locked in run ID order by its
	// statement: its own runs, then those parents or children. Locked in
	// that order, a child before its parent, they crossed a client's
	// cancel or reset of the tree, which locks the parent first, and both
	// waited for the other (40P01). So all of them are locked first, in
	// one statement, in run ID order (see Lock order in store.go).
	if err := c.lockTree(ctx, tx, batch); err != nil {
		return nil, fmt.Errorf("lock the runs of the batch and their parents and children: %w", err)
	}

	// 0. A child is started only by a parent that still holds its lease;
	// the lease stays locked until the commit, so no other worker takes the
	// parent meanwhile. (Before the transitions: a parent's end may be in
	// this batch, after the child start it made.)
	var childStarts []int
	for i, op := range batch {
		if op.newRun != nil && op.newRun.childStep != nil && errs[i] == nil && op.owner != "" {
			childStarts = append(childStarts, i)
		}
	}
	if len(childStarts) > 0 {
		held, err := s.lockLeases(ctx, tx, batch, childStarts)
		if err != nil {
			return nil, fmt.Errorf("lock parents' leases: %w", err)
		}
		for _, i := range childStarts {
			if !held[batch[i].runID] {
				errs[i] = errLeaseLost
			}
		}
	}

	// 1. Run transitions (waiting, closed).
	var fins []int
	for i, op := range batch {
		if op.fin != nil {
			fins = append(fins, i)
		}
	}
	if len(fins) > 0 {
		ok, err := s.finishRuns(ctx, tx, p, now, batch, fins)
		if err != nil {
			return nil, fmt.Errorf("finish runs: %w", err)
		}
		for _, i := range fins {
			if !ok[batch[i].runID] {
				errs[i] = errLeaseLost
			}
		}
	}

	// 2. New runs (starts, children, continue-as-new).
	var news []int
	for i, op := range batch {
		if op.newRun != nil && errs[i] == nil {
			news = append(news, i)
		}
	}
	if len(news) > 0 {
		ok, err := s.insertRuns(ctx, tx, p, c.e.cfg.LeaseTTL, batch, news, false)
		if err != nil {
			return nil, fmt.Errorf("insert runs: %w", err)
		}
		for _, i := range news {
			nr := batch[i].newRun
			if !ok[nr.row.RunID] {
				if nr.childStep != nil {
					// A reset hands the old run's open children to the new
					// run; when the new run starts the same child again
					// (same ID, same step), it takes that child on.
					adopted, err := s.openChildOf(ctx, tx, nr.row.WorkflowID, nr.row.ParentRunID.String, nr.childStep.Seq)
					if err != nil {
						return nil, fmt.Errorf("look for the child to adopt: %w", err)
					}
					if adopted {
						continue
					}
					// The parent records the refused child start as a failed step.
					nr.childStep.Status = stepFailed
					nr.childStep.Error = encodeError(NewNonRetryableError(ErrorTypeChildAlreadyStarted,
						fmt.Sprintf("child workflow %q is already started", nr.row.WorkflowID), nil))
				} else {
					errs[i] = ErrAlreadyStarted
				}
			} else if sg := nr.signal; sg != nil {
				if err := s.insertSignal(ctx, tx, nr.row.RunID, sg.name, sg.payload, sg.headers); err != nil {
					return nil, fmt.Errorf("insert start signal: %w", err)
				}
			}
		}
	}

	// 3. Steps, fenced by the lease.
	var bs batchSteps
	for i, op := range batch {
		if errs[i] != nil {
			continue
		}
		bs.add(i, op)
		if op.newRun != nil && op.newRun.childStep != nil {
			bs.addStep(i, op.fence(), op.newRun.childStep)
		}
	}
	if len(bs.steps) > 0 {
		ok, err := s.insertSteps(ctx, tx, p, bs.steps, bs.owners)
		if err != nil {
			return nil, fmt.Errorf("insert steps: %w", err)
		}
		for k := range ok {
			bs.mark(k)
		}
		bs.check(errs)
	}

	// 3b. A run that continues as new hands the signals it never read, and a
	// cancellation it never observed, to the new run (after step 3, so steps
	// of this batch count as read).
	var continued []*writeOp
	for i, op := range batch {
		if errs[i] == nil && op.fin != nil && op.fin.status == StatusContinued && op.newRun != nil {
			continued = append(continued, op)
		}
	}
	if len(continued) > 0 {
		if err := s.moveUnreadSignals(ctx, tx, continued); err != nil {
			return nil, fmt.Errorf("carry signals: %w", err)
		}
		if err := s.carryCancel(ctx, tx, continued); err != nil {
			return nil, fmt.Errorf("carry cancellation: %w", err)
		}
		if err := s.carryParent(ctx, tx, continued); err != nil {
			return nil, fmt.Errorf("carry parent: %w", err)
		}
	}

	// 4. Children that closed hand their result to the parent's step and wake it.
	var parents []string
	var closed []string
	for i, op := range batch {
		if op.fin == nil || errs[i] != nil || op.fin.status == StatusWaiting {
			continue
		}
		if op.fin.hasChildren {
			closed = append(closed, op.runID)
		}
		if op.fin.parentRunID == "" {
			continue
		}
		status := stepCompleted
		if op.fin.status != StatusCompleted {
			status = stepFailed
		}
		errJSON := op.fin.errJSON
		if op.fin.status == StatusContinued {
			// The parent waits for the chain's end; a continued run is not it.
			continue
		}
		parent, err := s.completeParentStep(ctx, tx, op.runID, status, op.fin.output, errJSON)
		if err != nil {
			return nil, fmt.Errorf("complete parent step: %w", err)
		}
		if parent != "" {
			parents = append(parents, parent)
		}
	}
	var woken []string
	if len(parents) > 0 {
		if err := s.bumpEvents(ctx, tx, now, parents); err != nil {
			return nil, fmt.Errorf("wake parents: %w", err)
		}
		woken = append(woken, parents...)
	}
	if len(closed) > 0 {
		ids, err := s.cancelChildrenOf(ctx, tx, now, closed, "parent closed")
		if err != nil {
			return nil, fmt.Errorf("cancel children: %w", err)
		}
		woken = append(woken, ids...)
	}

	// 5. Checkpoint interceptors, in the same transaction.
	if hooks := c.e.chains.checkpoint; len(hooks) > 0 && realTx != nil {
		var evs []*CheckpointEvent
		for i, op := range batch {
			if errs[i] == nil {
				evs = append(evs, op.events...)
			}
		}
		if len(evs) > 0 {
			for _, h := range hooks {
				if err := callCheckpoint(ctx, h, realTx, evs); err != nil {
					return nil, err
				}
			}
		}
	}

	// 6. Wake-ups go out once the transaction has committed, by the notifier
	// with the batch's other notices.
	if realTx != nil {
		committing = true
		if err := realTx.Commit(); err != nil {
			return nil, err
		}
	}
	if len(woken) > 0 {
		c.e.notes.committed(nil, nil, woken)
		c.e.dispatchWake(woken)
	}
	return errs, nil
}

// lockTree locks, when batch's closing runs wake parents or cancel
// children (step 4 of execCtx), the runs the transaction writes in one
// statement, in run ID order: the runs of the batch that end or start a
// child, the parents of the children that close, and the open children
// (with the cancel policy) of the runs that close. Without such runs the
// batch's runs are one set, each statement locks them in order, and no
// statement is added.
func (c *committer) lockTree(ctx context.Context, tx dbtx, batch []*writeOp) error {
	var children, parents []string
	for _, op := range batch {
		if op.fin == nil || op.fin.status == StatusWaiting {
			continue
		}
		if op.fin.hasChildren {
			parents = append(parents, op.runID)
		}
		if op.fin.parentRunID != "" && op.fin.status != StatusContinued {
			children = append(children, op.runID)
		}
	}
	if len(children) == 0 && len(parents) == 0 {
		return nil // most batches: nothing collected, nothing locked
	}
	var own []string
	for _, op := range batch {
		if op.fin != nil || (op.newRun != nil && op.newRun.childStep != nil) {
			own = append(own, op.runID)
		}
	}
	return c.e.store.lockTree(ctx, tx, own, children, parents)
}

// recordRefusal handles a checkpoint interceptor's refusal (err) of op on
// its own, and returns the error op's submitter is told. When the
// interceptor refused op's activity outcomes, what they become is written
// (stepRow.refused): failed attempts, each waiting for the next one as its
// retry policy says, or failed steps; the run is then dropped as for any
// refused write, and its next load goes on from that record. When op holds
// more than activity outcomes (a run's end, a timer's record), the outcomes
// are first offered alone: if the interceptor takes them, the refusal was
// of the rest, which is reported as a writeRefused (see refusal.go), and
// no activity runs again for it.
func (c *committer) recordRefusal(p *paramBuf, op *writeOp, err error) error {
	var ce *checkpointError
	if !errors.As(err, &ce) {
		return err
	}
	var outcomes []*stepRow
	for _, st := range op.steps {
		if st.refused != nil {
			outcomes = append(outcomes, st)
		}
	}
	if len(outcomes) == 0 {
		return &writeRefused{err}
	}
	if len(outcomes) < len(op.steps) || op.fin != nil || op.newRun != nil {
		var evs []*CheckpointEvent
		for _, ev := range op.events {
			for _, st := range outcomes {
				if ev.Seq == st.Seq && (ev.Kind == CheckpointActivityCompleted || ev.Kind == CheckpointActivityFailed) {
					evs = append(evs, ev)
				}
			}
		}
		var alone error
		c.run(p, []*writeOp{{runID: op.runID, owner: op.owner, token: op.token, steps: outcomes, events: evs,
			done: func(err error) { alone = err }}})
		if alone == nil {
			return &writeRefused{err}
		}
		// Refused alone too: the run below recorded what they become.
		return err
	}
	var steps []*stepRow
	var evs []*CheckpointEvent
	for _, st := range outcomes {
		row, more := st.refused(ce.err)
		steps, evs = append(steps, row), append(evs, more...)
	}
	c.e.cfg.Logger.Warn("engine: a checkpoint interceptor refused an activity's outcome; the attempt counts as failed",
		"run_id", op.runID, "err", ce.err)
	c.run(p, []*writeOp{{runID: op.runID, owner: op.owner, token: op.token, steps: steps, events: evs}})
	return err
}

// checkpointError is a checkpoint interceptor's refusal of a batch.
type checkpointError struct{ err error }

func (e *checkpointError) Error() string { return "engine: checkpoint interceptor: " + e.err.Error() }
func (e *checkpointError) Unwrap() error { return e.err }

// callCheckpoint calls one checkpoint interceptor; a panic in it becomes its
// error, so it cannot stop the committer (it runs on the committer's
// goroutine, outside any worker's recovery).
func callCheckpoint(ctx context.Context, h CheckpointInterceptor, tx CheckpointTx, evs []*CheckpointEvent) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &checkpointError{&PanicError{Value: fmt.Sprint(r), Stack: string(debug.Stack())}}
		}
	}()
	if err := h.Checkpoint(ctx, tx, evs); err != nil {
		return &checkpointError{err}
	}
	return nil
}

// stepsAndFinishOnly reports whether the batch is step records, plain run
// transitions and plain starts only (the usual case): one statement writes
// it (in a transaction with the checkpoint interceptors, when they have
// events to see). A start of a workflow ID
// whose run ends in the same batch is not plain: the end must commit
// before the start is judged against it.
func (c *committer) stepsAndFinishOnly(batch []*writeOp) bool {
	var ending, born map[string]bool
	for _, op := range batch {
		if nr := op.newRun; nr != nil {
			if nr.childStep != nil || nr.signal != nil || op.fin != nil {
				return false
			}
			if born == nil {
				born = map[string]bool{}
			}
			born[op.runID] = true
		}
		if op.fin != nil {
			if op.fin.hasChildren || op.fin.parentRunID != "" || op.fin.workflowID == "" {
				return false
			}
			if ending == nil {
				ending = map[string]bool{}
			}
			ending[op.fin.workflowID] = true
		}
	}
	if ending == nil || born == nil {
		return true
	}
	for _, op := range batch {
		// A run's end is written after its insert commits, never with it
		// (see submitPending); nor may a start be judged against an end
		// of the same workflow ID in the same snapshot.
		if (op.fin != nil && born[op.runID]) || (op.newRun != nil && ending[op.newRun.row.WorkflowID]) {
			return false
		}
	}
	return true
}

// singleWrite is a batch that stepsAndFinishOnly accepts, sorted for the
// statement that writes it.
type singleWrite struct {
	batch []*writeOp
	// steps of existing runs, fenced by their lease; newSteps of runs the
	// statement inserts (news), fenced by that insert.
	steps, newSteps batchSteps
	fins, news      []int
	// folds join the statement (see CheckpointFolder); foldRows receives
	// their rows, by fold.
	folds    []*CheckpointFold
	foldRows [][]CheckpointFoldRow
	// listeners: the statement closed runs and a process waits on closes
	// elsewhere (see listeners.go).
	listeners bool
	// params is the writer's memory for the statement's arguments.
	params *paramBuf
}

// newSingleWrite sorts batch's writes into the parts of the commit
// statement.
func newSingleWrite(batch []*writeOp, folds []*CheckpointFold) *singleWrite {
	return sortSingleWrite(&singleWrite{}, batch, folds)
}

// sortSingleWrite is newSingleWrite into w, emptied first.
func sortSingleWrite(w *singleWrite, batch []*writeOp, folds []*CheckpointFold) *singleWrite {
	*w = singleWrite{batch: batch, folds: folds}
	var born map[string]bool // runs this statement inserts
	for i, op := range batch {
		if op.newRun != nil {
			w.news = append(w.news, i)
			if born == nil {
				born = map[string]bool{}
			}
			born[op.runID] = true
		}
	}
	var steps, newSteps int
	for _, op := range batch {
		if born[op.runID] {
			newSteps += len(op.steps)
		} else {
			steps += len(op.steps)
		}
	}
	w.steps.reserve(steps)
	w.newSteps.reserve(newSteps)
	for i, op := range batch {
		if born[op.runID] {
			// Fenced by the insert: the runs table does not show the
			// statement's own new rows.
			w.newSteps.add(i, op)
			continue
		}
		w.steps.add(i, op)
		if op.fin != nil {
			w.fins = append(w.fins, i)
		}
	}
	return w
}

// execStepsAndFinish commits such a batch in a single statement. With
// checkpoint interceptors and events for them, the statement runs in a
// transaction that then calls the interceptors with the events of the ops it
// wrote, and commits: three round trips and the interceptors' own, where
// writing the batch statement by statement took six or more.
//
// When every checkpoint interceptor folds its write into the statement
// (CheckpointFolder), the batch stays one statement: one round trip. A
// folded statement that PostgreSQL refused is written again the usual way,
// so the interceptors' Checkpoint decides (see foldRefused).
func (c *committer) execStepsAndFinish(ctx context.Context, p *paramBuf, now time.Time, batch []*writeOp) ([]error, error) {
	if len(c.e.chains.checkpoint) == 0 || !hasEvents(batch) {
		return c.execSingle(ctx, p, now, batch, false, nil)
	}
	folds, ok := c.foldCheckpoints(ctx, batch)
	if !ok {
		return c.execSingle(ctx, p, now, batch, true, nil)
	}
	errs, err := c.execSingle(ctx, p, now, batch, false, folds)
	if len(folds) > 0 && foldRefused(ctx, err) {
		c.e.cfg.Logger.Debug("engine: a checkpoint fold failed; writing the batch with the interceptors' Checkpoint", "err", err)
		// The refused statement's connection is back in the pool: the
		// transaction's wait for one is bounded by ctx's deadline again
		// (pgconn.WithDeadline).
		return c.execSingle(ctx, p, now, batch, true, nil)
	}
	return errs, err
}

// execSingle is execStepsAndFinish with the interceptors' Checkpoint in a
// transaction (inTx), or with folds (possibly none) in one statement.
func (c *committer) execSingle(ctx context.Context, p *paramBuf, now time.Time, batch []*writeOp, inTx bool, folds []*CheckpointFold) (_ []error, err error) {
	errs := make([]error, len(batch))
	var tx dbtx = c.e.db
	var realTx *sql.Tx
	committing := false
	if inTx {
		t, err := c.e.db.BeginTx(ctx, nil)
		if err != nil {
			return nil, &notCommitted{err}
		}
		defer t.Rollback()
		tx, realTx = t, t
		// Until COMMIT is sent, a failure means nothing was written.
		defer func() {
			if err != nil && !committing {
				err = &notCommitted{err}
			}
		}()
	}
	w := p.singleWrite(batch, folds)
	defer p.forgetWrite()
	okFins, okRuns, err := c.e.store.stepsAndFinish(ctx, tx, now, c.e.cfg.LeaseTTL, w)
	if err != nil {
		return nil, err
	}
	w.steps.check(errs)
	w.newSteps.check(errs)
	quiet := !w.listeners || c.missListeners.Load()
	for i, op := range batch {
		if op.fin != nil {
			op.fin.quiet = quiet
		}
		if op.fin != nil && !okFins[op.runID] {
			errs[i] = errLeaseLost
		}
		if op.newRun != nil && !okRuns[op.newRun.row.RunID] {
			errs[i] = ErrAlreadyStarted
		}
	}
	if realTx == nil {
		if len(folds) > 0 {
			c.foldDone(ctx, folds, w.foldRows, unwrittenRuns(batch, errs))
		}
		return errs, nil
	}
	// The interceptors see the events of the ops the statement wrote.
	var evs []*CheckpointEvent
	for i, op := range batch {
		if errs[i] == nil {
			evs = append(evs, op.events...)
		}
	}
	if len(evs) > 0 {
		for _, h := range c.e.chains.checkpoint {
			if err := callCheckpoint(ctx, h, realTx, evs); err != nil {
				return nil, err
			}
		}
	}
	committing = true
	if err := realTx.Commit(); err != nil {
		return nil, err
	}
	return errs, nil
}

// hasEvents reports whether an op of batch carries checkpoint events.
func hasEvents(batch []*writeOp) bool {
	for _, op := range batch {
		if len(op.events) > 0 {
			return true
		}
	}
	return false
}

// batchSteps gathers the step records of a batch's ops for one statement.
// A step written twice in a batch (an activity's start, then its outcome)
// is sent once, as its last record: one statement cannot write a row twice.
// The attempt log entries of the records it replaces go with it, in order
// (in a copy: an op retried on its own still sends only its own).
type batchSteps struct {
	steps  []*stepRow
	owners []fence
	// op is, for each step, the op that wrote it first; more, the ops that
	// wrote it again (rare: a start and an outcome of one attempt in one
	// batch).
	op   []int
	more map[int][]int
	// at finds a step's index by its key once the batch has more than
	// batchStepsScan steps; below, a scan of steps does.
	at map[stepKey]int
	// written marks the steps the statement wrote (see mark); the others
	// were fenced out.
	written []bool
	// The first batchStepsInline steps are kept in these: at one workflow
	// at a time a commit has one or two, and the slices grown for them
	// were four allocations a commit.
	stepsIn   [batchStepsInline]*stepRow
	ownersIn  [batchStepsInline]fence
	opIn      [batchStepsInline]int
	writtenIn [batchStepsInline]bool
}

// batchStepsInline is how many steps a batchSteps holds without allocating.
const batchStepsInline = 2

// batchStepsScan is how many steps a batch looks through before it keeps
// an index of them: at one workflow at a time a commit has one or two, and
// the map and a slice per step were a fifth of a commit's allocations.
const batchStepsScan = 8

// reserve makes room for n steps: the slices and the index (past
// batchStepsScan steps) are then made once, not grown step by step (at
// bench -c 256 the index's growth and the fences' were 4% of the bytes the
// engine allocated).
func (b *batchSteps) reserve(n int) {
	if n <= batchStepsInline {
		return
	}
	b.steps, b.owners, b.op = make([]*stepRow, 0, n), make([]fence, 0, n), make([]int, 0, n)
	if n > batchStepsScan {
		b.at = make(map[stepKey]int, n)
	}
}

func (b *batchSteps) add(i int, op *writeOp) {
	for _, st := range op.steps {
		b.addStep(i, op.fence(), st)
	}
}

// find returns the index of the step recorded under k, or -1.
func (b *batchSteps) find(k stepKey) int {
	if b.at != nil {
		if n, ok := b.at[k]; ok {
			return n
		}
		return -1
	}
	for n, st := range b.steps {
		if st.Seq == k.seq && st.RunID == k.run {
			return n
		}
	}
	return -1
}

func (b *batchSteps) addStep(i int, owner fence, st *stepRow) {
	k := stepKey{st.RunID, st.Seq}
	if n := b.find(k); n >= 0 {
		if prev := b.steps[n].logAppend; len(prev) > 0 {
			merged := *st
			merged.logAppend = joinLogs(prev, st.logAppend)
			st = &merged
		}
		b.steps[n], b.owners[n] = st, owner
		if b.more == nil {
			b.more = map[int][]int{}
		}
		b.more[n] = append(b.more[n], i)
		return
	}
	if b.at == nil && len(b.steps) == batchStepsScan {
		b.at = make(map[stepKey]int, 2*batchStepsScan)
		for n, s := range b.steps {
			b.at[stepKey{s.RunID, s.Seq}] = n
		}
	}
	if b.at != nil {
		b.at[k] = len(b.steps)
	}
	if b.steps == nil {
		b.steps, b.owners, b.op = b.stepsIn[:0], b.ownersIn[:0], b.opIn[:0]
	}
	b.steps = append(b.steps, st)
	b.owners = append(b.owners, owner)
	b.op = append(b.op, i)
}

// mark records that the statement wrote the step under k; it reports
// whether the batch has that step.
func (b *batchSteps) mark(k stepKey) bool {
	n := b.find(k)
	if n < 0 {
		return false
	}
	if b.written == nil {
		if len(b.steps) <= batchStepsInline {
			b.written = b.writtenIn[:len(b.steps)]
		} else {
			b.written = make([]bool, len(b.steps))
		}
	}
	b.written[n] = true
	return true
}

// check fails the ops whose step records were not marked written (fenced
// out).
func (b *batchSteps) check(errs []error) {
	for n := range b.steps {
		if b.written == nil || !b.written[n] {
			errs[b.op[n]] = errLeaseLost
			for _, i := range b.more[n] {
				errs[i] = errLeaseLost
			}
		}
	}
}

// singleStatement reports whether the batch is only step records or only
// plain starts, with no checkpoint interceptor to call: one statement,
// atomic on its own.
func (c *committer) singleStatement(batch []*writeOp) bool {
	var steps, starts bool
	for _, op := range batch {
		switch {
		case op.fin != nil, op.newRun != nil && (op.newRun.childStep != nil || op.newRun.signal != nil):
			return false
		case op.newRun != nil && len(op.steps) == 0:
			starts = true
		case len(op.steps) > 0 && op.newRun == nil:
			steps = true
		default:
			return false
		}
		if len(op.events) > 0 && len(c.e.chains.checkpoint) > 0 {
			return false
		}
	}
	return steps != starts
}
