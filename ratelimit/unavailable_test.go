package ratelimit

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/graftdev/graft/engine"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// failFastClient talks to addr with short timeouts and no retries, so that
// an unreachable Redis is noticed within the test's patience.
func failFastClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	opts := redisOptions(t)
	opts.Addr = addr
	opts.MaxRetries = -1
	opts.DialTimeout = 200 * time.Millisecond
	opts.ReadTimeout = 500 * time.Millisecond
	opts.WriteTimeout = 500 * time.Millisecond
	c := redis.NewClient(opts)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func TestUnreachableRedisFailsClosed(t *testing.T) {
	t.Parallel()
	// Port 1 on loopback: nothing listens there, so connections are refused.
	c := failFastClient(t, "127.0.0.1:1")
	l := newTestRedisLimiter(t, c, RedisConfig{Limits: StaticLimits(Limits{Concurrency: 10}), Prefix: "graft:test:unreachable"})
	ctx := context.Background()

	_, err := l.Acquire(ctx, "registry", "a")
	var unavailable *UnavailableError
	require.ErrorAs(t, err, &unavailable)
	require.Equal(t, "acquire", unavailable.Op)
	require.Equal(t, "registry", unavailable.Key)
	var denied *DeniedError
	require.False(t, errors.As(err, &denied))

	_, err = l.Renew(ctx, Lease{Key: "registry", ID: "a"})
	require.ErrorAs(t, err, &unavailable)
	require.Equal(t, "renew", unavailable.Op)
	require.ErrorAs(t, l.Release(ctx, Lease{Key: "registry", ID: "a"}), &unavailable)

	// Wait keeps trying, then hands the work back (within the test's
	// context: a Wait that kept trying for ever would end with it).
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	_, err = Wait(wctx, l, "registry", "a", 300*time.Millisecond)
	var snooze *engine.SnoozeError
	require.ErrorAs(t, err, &snooze)
	require.ErrorAs(t, snooze, &unavailable, "the snooze says why")
	require.Positive(t, snooze.After)

	// The caller's own cancellation is not an outage.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, err = l.Acquire(cctx, "registry", "a")
	require.ErrorIs(t, err, context.Canceled)
}

// TestRedisOutageAndReturn puts a proxy between the limiter and Redis, stops
// it mid-run and starts it again: while it is down nothing is granted, a
// waiter keeps waiting, and when it returns the waiter gets its lease.
func TestRedisOutageAndReturn(t *testing.T) {
	t.Parallel()
	proxy := startProxy(t, redisOptions(t).Addr)
	c := failFastClient(t, proxy.addr)
	direct := newRedisClient(t)
	lim := StaticLimits(Limits{Concurrency: 2, LeaseTTL: 5 * time.Second})
	l := newTestRedisLimiter(t, c, RedisConfig{Limits: lim, Prefix: testPrefix(t, direct), RecoveryWindow: -1})
	ctx := context.Background()

	a, err := l.Acquire(ctx, "registry", "a")
	require.NoError(t, err)

	proxy.stop()
	_, err = l.Acquire(ctx, "registry", "b")
	var unavailable *UnavailableError
	require.ErrorAs(t, err, &unavailable)

	type result struct {
		lease Lease
		err   error
	}
	done := make(chan result, 1)
	go func() {
		lease, err := Wait(ctx, l, "registry", "b", 20*time.Second)
		done <- result{lease, err}
	}()
	// The waiter is retrying against a dead Redis; it must not get a lease.
	select {
	case r := <-done:
		t.Fatalf("Wait returned during the outage: %+v", r)
	case <-time.After(300 * time.Millisecond):
	}

	proxy.start()
	select {
	case r := <-done:
		require.NoError(t, r.err)
		require.Equal(t, "b", r.lease.ID)
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not resume after Redis returned")
	}
	// The lease taken before the outage is still counted.
	_, err = l.Acquire(ctx, "registry", "c")
	require.Equal(t, 2, requireDenied(t, err, ReasonConcurrency).InUse)
	require.NoError(t, l.Release(ctx, a))
}

// proxy is a TCP forwarder that can be stopped (closing every connection)
// and started again on the same address: Redis going away and coming back.
type proxy struct {
	t       *testing.T
	addr    string
	target  string
	mu      sync.Mutex
	ln      net.Listener
	conns   []net.Conn
	stopped bool
}

func startProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &proxy{t: t, addr: ln.Addr().String(), target: target}
	p.serve(ln)
	t.Cleanup(p.stop)
	return p
}

func (p *proxy) start() {
	ln, err := net.Listen("tcp", p.addr)
	require.NoError(p.t, err)
	p.serve(ln)
}

func (p *proxy) serve(ln net.Listener) {
	p.mu.Lock()
	p.ln, p.stopped = ln, false
	p.mu.Unlock()
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			out, err := net.Dial("tcp", p.target)
			if err != nil {
				_ = in.Close()
				continue
			}
			p.mu.Lock()
			if p.stopped {
				p.mu.Unlock()
				_ = in.Close()
				_ = out.Close()
				return
			}
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			go pipe(in, out)
			go pipe(out, in)
		}
	}()
}

func pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	_ = dst.Close()
	_ = src.Close()
}

func (p *proxy) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	p.stopped = true
	_ = p.ln.Close()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}
