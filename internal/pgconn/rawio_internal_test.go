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

	msg := []byte("x")
	allocs := testing.AllocsPerRun(50, func() {
		if _, err := g.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Read(buf[:1]); err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := g.Read(buf[:1]); err != nil {
			t.Fatal(err)
		}
	})
	require.Zero(t, allocs, "a raw read or write allocates nothing")

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
		_, werr = g.Write(msg)
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
