package engine

import (
	"context"
	"time"
)

// release gives a run back after a failed write: it becomes waiting until
// wakeAt, for any worker to resume from its record.
type release struct {
	fence  fence
	runID  string
	wakeAt time.Time
	// errJSON, when set, is kept on the run (a refusal and its count);
	// nil leaves the run's error as it is.
	errJSON []byte
}

// releaseLater queues a release. It is called where a write failed, often
// on a shard's goroutine, which must not wait for a statement per run: the
// release loop gives back in one statement what queued meanwhile. After the
// engine closed, the run is left to its lease's expiry.
func (c *committer) releaseLater(f fence, runID string, wakeAt time.Time, errJSON []byte) {
	select {
	case c.releases <- release{fence: f, runID: runID, wakeAt: wakeAt, errJSON: errJSON}:
	case <-c.relStop:
	}
}

func (c *committer) releaseLoop() {
	defer close(c.relDone)
	for {
		var batch []release
		select {
		case r := <-c.releases:
			batch = append(batch, r)
		case <-c.relStop:
			for {
				select {
				case r := <-c.releases:
					batch = append(batch, r)
				default:
					if len(batch) > 0 {
						c.releaseNow(batch)
					}
					return
				}
			}
		}
	more:
		for len(batch) < c.e.cfg.MaxBatch {
			select {
			case r := <-c.releases:
				batch = append(batch, r)
			default:
				break more
			}
		}
		c.releaseNow(batch)
	}
}

// releaseNow writes a batch of releases, retrying a database fault a few
// times; a run whose release fails is resumed when its lease expires.
func (c *committer) releaseNow(batch []release) {
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(context.Background(), c.e.cfg.CommitTimeout)
		err := c.e.store.releaseRuns(ctx, batch)
		cancel()
		if err == nil {
			return
		}
		if classify(err) == faultNone || attempt >= contentionRetries || c.stopping() {
			c.e.cfg.Logger.Warn("engine: runs not released; their leases will expire", "runs", len(batch), "err", err)
			return
		}
		c.pause(attempt)
	}
}
