package engine

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/graftdev/graft/internal/pgconn"
)

// The listener checks its LISTEN connection after each listenCheckInterval
// without a notification: pq reconnects a connection whose error it sees,
// and a check (an empty query) makes a dead connection show its error.
//
// A connection whose backend stalls (stopped, or its host frozen) shows
// none: the TCP connection stays up, the kernel acknowledges what is sent,
// and the check waits for an answer for good, holding the listener's lock
// (which Listen and Close take too). Each check used to start a goroutine
// of its own, so against a stalled backend they piled up, one an interval,
// none ever returning. Now at most one check is in flight; one still
// unanswered at the next interval has failed, and its connection is
// closed under pq (listenDialer.drop): the check returns, and pq connects
// again, listens on every channel again, and reports the reconnection,
// after which workers and waiters look again for what they missed.

// listenCheckInterval is how long the listener waits without a
// notification before it checks its connection, and how long a check has
// to be answered.
const listenCheckInterval = time.Minute

// listenCheck is the state of the listener's checks.
type listenCheck struct {
	inFlight atomic.Bool
	wg       sync.WaitGroup // the check in flight, waited for by Close
}

// checkListen starts a check of the LISTEN connection, unless one is
// still in flight: that one went unanswered for an interval, and its
// connection is replaced instead.
func (e *Engine) checkListen() {
	if !e.listenCheck.inFlight.CompareAndSwap(false, true) {
		e.cfg.Logger.Warn("engine: the LISTEN connection did not answer a check within its interval; replacing it",
			"interval", e.listenCheckInterval())
		e.listenDial.drop()
		return
	}
	e.listenCheck.wg.Add(1)
	go func() {
		defer e.listenCheck.wg.Done()
		defer e.listenCheck.inFlight.Store(false)
		e.listenCheckEvent("start")
		defer e.listenCheckEvent("end")
		_ = e.listener.Ping() // an error is the listener's to reconnect
	}()
}

func (e *Engine) listenCheckInterval() time.Duration {
	if d := e.cfg.listenCheckEvery; d > 0 {
		return d
	}
	return listenCheckInterval
}

func (e *Engine) listenCheckEvent(ev string) {
	if h := e.hooks.listenCheck.Load(); h != nil {
		(*h)(ev)
	}
}

// listenDialer dials the listener's connections (as pgconn.Dialer) and
// keeps the last one, so that drop can close it: a connection to a stalled
// backend, or one stuck in its start-up.
type listenDialer struct {
	d pgconn.Dialer

	mu   sync.Mutex
	last net.Conn
}

func (l *listenDialer) keep(c net.Conn, err error) (net.Conn, error) {
	if err == nil {
		l.mu.Lock()
		l.last = c
		l.mu.Unlock()
	}
	return c, err
}

// Dial implements pq.Dialer.
func (l *listenDialer) Dial(network, address string) (net.Conn, error) {
	return l.keep(l.d.Dial(network, address))
}

// DialTimeout implements pq.Dialer.
func (l *listenDialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	return l.keep(l.d.DialTimeout(network, address, timeout))
}

// DialContext implements pq.DialerContext.
func (l *listenDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return l.keep(l.d.DialContext(ctx, network, address))
}

// drop closes the last connection dialled: pq sees it fail and connects
// again.
func (l *listenDialer) drop() {
	l.mu.Lock()
	c := l.last
	l.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}
