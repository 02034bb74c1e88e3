package pgconn

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestRawSocketIO pins what a socket's raw reads and writes (rawio_linux.go)
// keep of net.Conn's: the bytes both ways, a read deadline as
// os.ErrDeadlineExceeded, the peer's close as io.EOF, a write to a reset
// peer as an error (not a SIGPIPE), a closed connection as net.ErrClosed,
// and no allocation a read or a write.
func TestRawSocketIO(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("raw socket I/O is Linux's")
	}
	c, peer := tcpPair(t)
	g := &guardedConn{Conn: c, raw: rawSocket(c)}
	require.NotNil(t, g.raw)
	defer g.Close()

	// Large enough to fill the socket's buffers: the write waits on the
	// poller (EAGAIN) while the peer reads.
	big := make([]byte, 8<<20)
	for i := range big {
		big[i] = byte(i * 7)
	}
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(peer, int64(len(big))))
		got <- b
	}()
	n, err := g.Write(big)
	require.NoError(t, err)
	require.Equal(t, len(big), n)
	require.Equal(t, big, <-got)

	_, err = peer.Write([]byte("hello"))
	require.NoError(t, err)
	buf := make([]byte, 5)
	_, err = io.ReadFull(g, buf)
	require.NoError(t, err)
	require.Equal(t, "hello", string(buf))

	// A write is sent by the read that follows it: the peer echoes.
	msg := []byte("x")
	echo := make(chan struct{})
	go func() {
		defer close(echo)
		b := make([]byte, 1)
		for {
			if _, err := peer.Read(b); err != nil {
				return
			}
			if b[0] == 'q' {
				return
			}
			if _, err := peer.Write(b); err != nil {
				return
			}
		}
	}()
	allocs := testing.AllocsPerRun(50, func() {
		if _, err := g.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := g.Read(buf[:1]); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs, "a raw read or write allocates nothing")
	_, err = g.Write([]byte("q"))
	require.NoError(t, err)
	require.NoError(t, g.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
	_, err = g.Read(buf) // sends q; nothing comes back
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	require.NoError(t, g.SetReadDeadline(time.Time{}))
	<-echo

	require.NoError(t, g.SetReadDeadline(time.Now().Add(20*time.Millisecond)))
	_, err = g.Read(buf)
	require.ErrorIs(t, err, os.ErrDeadlineExceeded)
	require.NoError(t, g.SetReadDeadline(time.Time{}))

	// The peer resets the connection: reads end, and writes fail (EPIPE
	// or ECONNRESET) instead of raising SIGPIPE.
	require.NoError(t, peer.(*net.TCPConn).SetLinger(0))
	require.NoError(t, peer.Close())
	_, err = g.Read(buf)
	require.Error(t, err)
	var werr error
	for i := 0; i < 100 && werr == nil; i++ {
		if _, werr = g.Write(msg); werr == nil {
			// Kept for the read, which sends it.
			_, werr = g.Read(buf)
		}
	}
	require.Error(t, werr)
	var op *net.OpError
	require.True(t, errors.As(werr, &op), "wrapped as net.Conn's errors are: %v", werr)

	require.NoError(t, g.Close())
	_, err = g.Read(buf)
	require.ErrorIs(t, err, net.ErrClosed)
	_, err = g.Write(msg)
	require.ErrorIs(t, err, net.ErrClosed)
}

// TestRawSocketDeferredWrites: a write is sent by the read that follows
// it, and by Close; a write while a read waits (lib/pq's COPY reads and
// writes at once) is sent at once, as is one past deferMax.
func TestRawSocketDeferredWrites(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("raw socket I/O is Linux's")
	}
	c, peer := tcpPair(t)
	g := &guardedConn{Conn: c, raw: rawSocket(c)}

	// Written while a read waits: sent at once.
	got := make(chan string, 1)
	go func() {
		b := make([]byte, 4)
		_, err := io.ReadFull(g, b)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(b)
	}()
	require.Eventually(t, func() bool {
		g.raw.mu.Lock()
		defer g.raw.mu.Unlock()
		return g.raw.reading
	}, 10*time.Second, time.Millisecond)
	_, err := g.Write([]byte("ping"))
	require.NoError(t, err)
	b := make([]byte, 4)
	_, err = io.ReadFull(peer, b)
	require.NoError(t, err)
	require.Equal(t, "ping", string(b))
	_, err = peer.Write([]byte("pong"))
	require.NoError(t, err)
	require.Equal(t, "pong", <-got)

	// Kept, then sent by Close.
	c2, peer2 := tcpPair(t)
	g2 := &guardedConn{Conn: c2, raw: rawSocket(c2)}
	_, err = g2.Write([]byte("ab"))
	require.NoError(t, err)
	_, err = g2.Write([]byte("c"))
	require.NoError(t, err)
	require.NoError(t, g2.Close())
	all, err := io.ReadAll(peer2)
	require.NoError(t, err)
	require.Equal(t, "abc", string(all))

	// Past deferMax: what is kept goes first, then the write, at once.
	c3, peer3 := tcpPair(t)
	g3 := &guardedConn{Conn: c3, raw: rawSocket(c3)}
	defer g3.Close()
	_, err = g3.Write([]byte("k"))
	require.NoError(t, err)
	big := make([]byte, deferMax+1)
	for i := range big {
		big[i] = 'z'
	}
	_, err = g3.Write(big)
	require.NoError(t, err)
	b = make([]byte, 1+len(big))
	_, err = io.ReadFull(peer3, b)
	require.NoError(t, err)
	require.Equal(t, "k", string(b[:1]))
	require.Equal(t, big, b[1:])
}

// TestRawSocketEOF: the peer's orderly close is io.EOF, as net.Conn's.
func TestRawSocketEOF(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("raw socket I/O is Linux's")
	}
	a, b := tcpPair(t)
	g := &guardedConn{Conn: a, raw: rawSocket(a)}
	defer g.Close()
	require.NoError(t, b.Close())
	_, err := g.Read(make([]byte, 4))
	require.ErrorIs(t, err, io.EOF)
}

func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	p := <-accepted
	require.NotNil(t, p)
	t.Cleanup(func() { c.Close(); p.Close() })
	return c, p
}
