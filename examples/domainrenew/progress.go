package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// progress draws a bar of closed renewals on w (a terminal: one line
// redrawn in place) until stopped.
type progress struct {
	w      io.Writer
	leg    *legacy
	n      int
	done   chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	events []string
}

func startProgress(ctx context.Context, w io.Writer, leg *legacy, n int) *progress {
	p := &progress{w: w, leg: leg, n: n, done: make(chan struct{})}
	if w == nil {
		return p
	}
	p.wg.Go(func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			p.draw(ctx)
			select {
			case <-ctx.Done():
				return
			case <-p.done:
				p.draw(ctx)
				fmt.Fprintln(p.w)
				return
			case <-t.C:
			}
		}
	})
	return p
}

func (p *progress) draw(ctx context.Context) {
	var closed, graft int
	err := p.leg.db.QueryRowContext(ctx, `SELECT count(*) FILTER (WHERE status IN ('done', 'cancelled', 'failed')),
		count(*) FILTER (WHERE runner IS NULL AND status <> 'pending') FROM `+p.leg.table()).Scan(&closed, &graft)
	if err != nil {
		return
	}
	const width = 40
	filled := closed * width / max(p.n, 1)
	fmt.Fprintf(p.w, "\r  [%s%s] %d/%d closed (%d taken by graft)", strings.Repeat("=", filled), strings.Repeat(" ", width-filled), closed, p.n, graft)
}

// note records an event to print after the bar.
func (p *progress) note(s string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.events = append(p.events, s)
}

func (p *progress) notes() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.events...)
}

func (p *progress) stop() {
	close(p.done)
	p.wg.Wait()
}
