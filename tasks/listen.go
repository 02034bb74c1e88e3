package tasks

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/lib/pq"

	"github.com/graftdev/graft/internal/pgconn"
)

// listen opens a LISTEN connection on the channels. After a reconnect the
// listener delivers a nil notification: callers treat it as "something may
// have changed". Its connection has the engine's keep-alive probes and
// TCP_USER_TIMEOUT (pgconn.Dialer), as the engine's own listener does, so
// a server that vanished is noticed and the listener reconnects.
func listen(dsn string, log *slog.Logger, channels ...string) (*pq.Listener, error) {
	l := pq.NewDialListener(pgconn.Dialer{}, dsn, 100*time.Millisecond, 10*time.Second, func(ev pq.ListenerEventType, err error) {
		if err != nil {
			log.Warn("tasks: listener", "event", ev, "err", err)
		}
	})
	for _, ch := range channels {
		if err := l.Listen(ch); err != nil {
			l.Close()
			return nil, fmt.Errorf("tasks: listen %s: %w", ch, err)
		}
	}
	return l, nil
}

// listenerConn coalesces the notifications of its channels into one wake-up.
type listenerConn struct {
	l    *pq.Listener
	wake chan struct{}
	done chan struct{}
}

func newListenerConn(dsn string, log *slog.Logger, channels ...string) (*listenerConn, error) {
	l, err := listen(dsn, log, channels...)
	if err != nil {
		return nil, err
	}
	c := &listenerConn{l: l, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for range l.Notify {
			select {
			case c.wake <- struct{}{}:
			default:
			}
		}
	}()
	return c, nil
}

// notified receives after one or more notifications.
func (c *listenerConn) notified() <-chan struct{} { return c.wake }

func (c *listenerConn) close() error {
	err := c.l.Close()
	<-c.done
	return err
}
