package engine

// SetQueryFunc registers a read-only handler, taking no argument, answering
// queries named name: the usual kind, which reports state ("status",
// "progress"). Any argument the caller sends is ignored. Use
// SetQueryHandler for a query that takes one.
func SetQueryFunc[R any](ctx Context, name string, h func() (R, error)) {
	put(&ctx.state().queries, name, func([]byte) (any, error) { return h() })
}
