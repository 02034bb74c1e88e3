//go:build !linux

package pgconn

import "net"

// rawIO: raw reads and writes are Linux's (rawio_linux.go).
type rawIO struct{}

func rawSocket(net.Conn) *rawIO { return nil }

func (g *guardedConn) sockRead(b []byte) (int, error)  { return g.Conn.Read(b) }
func (g *guardedConn) sockWrite(b []byte) (int, error) { return g.Conn.Write(b) }
