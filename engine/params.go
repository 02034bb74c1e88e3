package engine

// paramBuf is the memory a commit shard's statements build their
// arguments in: the argument list, and the bytes of their array
// parameters (see unnestBatch.args) and of their VALUES lists' text cells
// (see unnestBatch.argsAs), sent as slices of it. Built afresh at each
// commit they were the engine's largest allocations after lib/pq's own
// (bench -n 20000 -c 256: 72 MB of 566 MB, and 31 MB more where lib/pq
// copied each string argument into bytes before sending it).
//
// A shard writes one batch at a time, by its loop or by a submitter that
// holds it (see commitShard), and lib/pq reads a statement's arguments only
// during the call that sends it (they are copied into its message then):
// so each statement of the writer's can build its arguments over those of
// the one before. A nil paramBuf gives each statement memory of its own.
//
// The writer's sorting of a batch into the parts of its commit statement
// (singleWrite, 536 bytes) is kept here too: at one workflow at a time
// each of a workflow's four commits made one.
type paramBuf struct {
	b    []byte
	args []any
	w    singleWrite
}

// paramBufKeep bounds the bytes a paramBuf keeps from one statement to the
// next, and paramArgsKeep its argument list's length: an exceptional
// batch's (a thousand ops queued behind a stalled commit) is dropped once
// sent, not kept for the small ones that follow. A commit of bench -c 1024
// takes about 150 KB.
const (
	paramBufKeep  = 512 << 10
	paramArgsKeep = 256
)

// start begins a statement's arguments: an empty list with room for n, and
// the buffer emptied (the previous statement was sent).
func (p *paramBuf) start(n int) []any {
	if p == nil {
		return make([]any, 0, n)
	}
	p.b = p.b[:0]
	if cap(p.args) < n {
		return make([]any, 0, n)
	}
	return p.args[:0]
}

// sent ends the statement whose arguments start began, args: its call
// returned, so lib/pq no longer reads them. The list is cleared, so it
// keeps no payload alive until the next statement.
func (p *paramBuf) sent(args []any) {
	if p == nil {
		return
	}
	clear(args)
	if cap(args) <= paramArgsKeep {
		p.args = args[:0]
	} else {
		p.args = nil
	}
	if cap(p.b) > paramBufKeep {
		p.b = nil
	}
}

// grab returns the buffer, for a batch to append to (nil: a batch of no
// writer's, which allocates its own); keep stores it back grown.
func (p *paramBuf) grab() []byte {
	if p == nil {
		return nil
	}
	return p.b
}

func (p *paramBuf) keep(b []byte) {
	if p != nil {
		p.b = b
	}
}

// grow returns b with room for n bytes more, in one allocation when it
// has not (slices.Grow makes two under the race detector, which the tests
// of allocations count).
func grow(b []byte, n int) []byte {
	if cap(b)-len(b) >= n {
		return b
	}
	return append(make([]byte, 0, max(len(b)+n, 2*cap(b))), b...)
}

// singleWrite sorts batch (see newSingleWrite) for a statement built in
// p: into p's, emptied, whose last batch was written (nothing keeps a
// singleWrite past the execSingle that sorted it).
func (p *paramBuf) singleWrite(batch []*writeOp, folds []*CheckpointFold) *singleWrite {
	if p == nil {
		return newSingleWrite(batch, folds)
	}
	w := sortSingleWrite(&p.w, batch, folds)
	w.params = p
	return w
}

// forgetWrite lets go of the batch singleWrite sorted, once written: an
// idle shard keeps none alive.
func (p *paramBuf) forgetWrite() {
	if p != nil {
		p.w = singleWrite{}
	}
}
