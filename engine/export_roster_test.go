package engine

// SetWorkNoticeHookForTest makes fn learn of each work notice the client's
// process sends: its queue and the worker it names ("" for every worker).
func SetWorkNoticeHookForTest(c *Client, fn func(queue, worker string)) {
	c.e.notes.named.Store(&fn)
}
