// Package pgconn opens lib/pq connections that a stalled database cannot
// hold for ever.
//
// lib/pq answers a query's ended context by sending PostgreSQL a cancel
// request over a new connection and then keeps reading the old one: if
// the server does not answer (its backend is stopped, its host hangs, the
// network drops the packets), the read waits for the operating system to
// give up on the connection, which can be never. A Connector's
// connections are watched from that cancel request on: a server that has
// not answered within CancelGrace has its backend terminated (best
// effort, over a fresh connection) and the connection closed, so the
// blocked call returns a connection error at once. Nothing is added to a
// query that ends normally, to idle pooled connections, or to calls whose
// context has no end.
//
// A statement can also be given a deadline that the connection keeps
// itself (WithDeadline), with the same cancel request and the same grace,
// instead of a context that lib/pq would watch with a goroutine per
// statement: the engine's commits use it. The context still ends at the
// deadline for database/sql, so a wait for one of the pool's connections
// ends then too.
//
// Every connection (the pool's, a LISTEN connection's via Dialer, cancel
// requests) also has TCP keep-alive probes and, on Linux, TCP_USER_TIMEOUT,
// so a peer that vanished is noticed within about half a minute even with
// no query in flight.
//
// It imports nothing of graft's.
package pgconn
