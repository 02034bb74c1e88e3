package engine

import (
	"context"
	"database/sql/driver"
	"errors"
	"io"
	"net"
	"time"

	"github.com/lib/pq"
)

// How the engine tells a database failure worth retrying from one that is
// not. A failover, a restart, a terminated backend or a dropped connection
// ends the statement (and maybe the session), but says nothing against the
// write itself: written again a moment later, it succeeds. A deadlock or a
// serialization failure is the same write meeting another one at a bad
// moment. Anything else (a constraint, a checkpoint interceptor's refusal)
// would fail again the same way.

// dbFault classifies err.
type dbFault int

const (
	// faultNone: not a database fault; the write failed for a reason of its
	// own and is not retried.
	faultNone dbFault = iota
	// faultConnection: the connection or the server went away (class 08,
	// 57P01..57P03, a reset, EOF, a refused dial). Retried for as long as
	// it lasts: nothing else can be written meanwhile either.
	faultConnection
	// faultContention: a deadlock, a serialization failure, a lock or
	// statement timeout. Retried a few times, then the write is treated as
	// failed so that one stuck row cannot hold its neighbours back.
	faultContention
)

// contentionRetries bounds the attempts of a write that meets contention.
const contentionRetries = 3

func classify(err error) dbFault {
	if err == nil {
		return faultNone
	}
	var pw *poolWait
	if errors.As(err, &pw) {
		return faultConnection
	}
	var pe *pq.Error
	if errors.As(err, &pe) {
		switch {
		case pe.Code.Class() == "08", pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03", pe.Code == "53300":
			return faultConnection
		case pe.Code == "40001", pe.Code == "40P01", pe.Code == "55P03", pe.Code == "57014":
			return faultContention
		}
		return faultNone
	}
	var ne net.Error
	switch {
	case errors.Is(err, driver.ErrBadConn), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		isConnErrno(err), errors.As(err, &ne):
		return faultConnection
	case errors.Is(err, context.DeadlineExceeded):
		// The engine's own statement timeout (callers' contexts do not
		// reach the committer).
		return faultContention
	}
	return faultNone
}

// IsConflict reports whether err is a deadlock (40P01) or a serialization
// failure (40001): the transaction met another one at a bad moment and was
// rolled back for no fault of its own; run again, it goes through. Callers
// of the ...Tx calls, which own their transaction, use it to decide so.
func IsConflict(err error) bool {
	var pe *pq.Error
	return errors.As(err, &pe) && (pe.Code == "40P01" || pe.Code == "40001")
}

// notCommitted marks an error raised before the write could have committed
// (inside a transaction, before COMMIT): no read-back is needed to know the
// write did not happen.
type notCommitted struct{ err error }

func (e *notCommitted) Error() string { return e.err.Error() }
func (e *notCommitted) Unwrap() error { return e.err }

// poolWait marks a write that gave up waiting for one of the pool's
// connections (every one held, by statements to stalled backends for
// instance): nothing was sent, and nothing was wrong with the write, so it
// is retried as for a connection fault, for as long as that lasts.
type poolWait struct{ err error }

func (e *poolWait) Error() string {
	return "wait for a database connection: " + e.err.Error()
}
func (e *poolWait) Unwrap() error { return e.err }

// retryPause is the wait before attempt n+1 of a failed write: 10 ms
// doubling up to a second.
func retryPause(n int) time.Duration {
	if n > 7 {
		return time.Second
	}
	return min(time.Second, (10*time.Millisecond)<<max(n-1, 0))
}
