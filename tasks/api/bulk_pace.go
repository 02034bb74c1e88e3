package api

import (
	"sync"
	"time"
)

// bulkMaxCatchUp bounds how far behind its plan a bulk job's batch may
// start and still be paced from the plan (see bulkPace): at most this much
// of the job's items go at once to catch up.
const bulkMaxCatchUp = bulkWindow / 4

// bulkPace remembers, per job, when the items of its last batch in this
// process were planned to end, so that the job's next batch is paced from
// there rather than from whenever the workflow got to it: the time between
// two batches (the batch's commit, the workflow's next step, reading the
// next items) is then not lost to the job's rate. A batch that starts more
// than bulkMaxCatchUp after the plan (after a pause, a restart, in another
// process) is paced from its own start.
type bulkPace struct {
	mu  sync.Mutex
	end map[string]time.Time
}

// start is when the batch of job id that begins at now is paced from.
func (p *bulkPace) start(id string, now time.Time) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	if end, ok := p.end[id]; ok && !end.After(now) && now.Sub(end) <= bulkMaxCatchUp {
		return end
	}
	return now
}

// planned records when the batch of job id that just ended was planned to
// end; the zero time forgets the job (it ended, paused or failed).
func (p *bulkPace) planned(id string, end time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if end.IsZero() {
		delete(p.end, id)
		return
	}
	if p.end == nil {
		p.end = map[string]time.Time{}
	}
	p.end[id] = end
}
