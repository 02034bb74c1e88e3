package ratelimit

import (
	"context"
	"sync"
	"time"
)

// waitHooks is implemented by this package's limiters so that Wait can queue
// waiters in process and record metrics. Other Limiter implementations work
// with Wait too, without either: each of their waiters polls on its own.
type waitHooks interface {
	waitQueues() *waitQueues
	observeWait(ctx context.Context, key string, d time.Duration, outcome string)
}

// waitQueues keeps, per key, the goroutines of this process that are waiting
// for a lease. Only the one at the head polls the limiter; the rest wait their
// turn in order. Without this, every waiting goroutine of every process would
// poll Redis, and on the 1st of the month that is a denial-of-service attack
// on Redis by its own clients.
type waitQueues struct {
	mu sync.Mutex
	m  map[string]*waitQueue
}

type waitQueue struct {
	refs int // goroutines between join and leave; guarded by waitQueues.mu
	// waiting counts goroutines on the slow path; a newcomer that sees any
	// queues behind them instead of overtaking. Guarded by waitQueues.mu.
	waiting int
	// turn has capacity one: whoever holds the token polls.
	turn chan struct{}
	// kick wakes the poller early when this process releases a lease of the
	// key, since that slot can be taken at once.
	kick chan struct{}
	// hint is the poller's latest retry-after, handed to waiters that give up
	// before their turn comes. Guarded by waitQueues.mu.
	hint time.Duration
}

func (w *waitQueues) join(key string) *waitQueue {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = make(map[string]*waitQueue)
	}
	q := w.m[key]
	if q == nil {
		q = &waitQueue{turn: make(chan struct{}, 1), kick: make(chan struct{}, 1)}
		w.m[key] = q
	}
	q.refs++
	return q
}

func (w *waitQueues) leave(key string, q *waitQueue) {
	w.mu.Lock()
	defer w.mu.Unlock()
	q.refs--
	if q.refs == 0 {
		delete(w.m, key)
	}
}

// startWaiting marks the caller as queued.
func (w *waitQueues) startWaiting(q *waitQueue) {
	w.mu.Lock()
	defer w.mu.Unlock()
	q.waiting++
}

func (w *waitQueues) stopWaiting(q *waitQueue) {
	w.mu.Lock()
	defer w.mu.Unlock()
	q.waiting--
}

func (w *waitQueues) setHint(q *waitQueue, d time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	q.hint = d
}

func (w *waitQueues) getHint(q *waitQueue) time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return q.hint
}

func (w *waitQueues) anyWaiting(q *waitQueue) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return q.waiting > 0
}

// released wakes key's poller, if any, after this process freed a slot.
func (w *waitQueues) released(key string) {
	w.mu.Lock()
	q := w.m[key]
	w.mu.Unlock()
	if q == nil {
		return
	}
	select {
	case q.kick <- struct{}{}:
	default:
	}
}

// waitingByKey returns, per key, how many goroutines of this process are
// queued for a lease (throttled), for the limiter's reports.
func (w *waitQueues) waitingByKey() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]int, len(w.m))
	for k, q := range w.m {
		if q.waiting > 0 {
			out[k] = q.waiting
		}
	}
	return out
}
