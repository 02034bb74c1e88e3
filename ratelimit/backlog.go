package ratelimit

import (
	"math"
	"sync"
	"time"
)

const (
	// grantRateWindow is the time constant of the grant rate's moving
	// average: long enough to smooth single grants, short enough to follow a
	// limit changed at run time.
	grantRateWindow = time.Second
	// lostAfter is how long past its due time a snoozed attempt that never
	// came back (its run was cancelled, its worker stopped) is still counted.
	lostAfter = time.Minute
	// sweepEvery bounds how often the snoozed attempts are swept for lost ones.
	sweepEvery = 10 * time.Second
	// stoppedAfter is how long a key with a backlog may grant this process
	// nothing before it counts as stopped (a Redis outage or recovery
	// window, a limit lowered to zero, slots held by a killed worker), its
	// last grant rate no guide to when the backlog is served.
	stoppedAfter = 5 * time.Second
	// saturatedAfter and saturatedGrants are how long attempts must have
	// waited for a key without a break (the grant rate's window), and how
	// many leases it must have granted meanwhile, before its grant rate is
	// taken for its speed: while the waiters run out now and then, the key
	// grants what it is asked for, and the rate measures the demand, not
	// the key; and a grant or two measure nothing. Short, because a
	// process that just started (a worker restarted after a crash) sends
	// its whole backlog away every few seconds until its key is saturated.
	saturatedAfter  = grantRateWindow
	saturatedGrants = 10
)

// backlog is what one process knows of its own demand on each key: the
// attempts waiting for a lease, the attempts snoozed and not yet back, and
// the rate at which the key has been granting this process leases. The
// interceptor uses it to bound the waiters and to send the others away for
// about as long as the ones ahead of them will take.
type backlog struct {
	mu   sync.Mutex
	keys map[string]*keyBacklog
}

type keyBacklog struct {
	waiting int
	snoozed map[string]time.Time // lease ID -> when it is due back
	// rate is the grants per second as of last, an exponentially decaying
	// count of grants divided by grantRateWindow, since first.
	rate        float64
	first, last time.Time
	nextSweep   time.Time
	// busySince is when waiting last rose from zero; busyGrants counts
	// the grants since.
	busySince  time.Time
	busyGrants int
}

// pace is what an attempt turned away is told of the key: the attempts of
// this process ahead of it and how fast the key grants them leases.
type pace struct {
	ahead int
	// rate is the key's grants per second to this process while it
	// grants (as of its last grant); 0 before its first.
	rate float64
	// stopped: the key has granted nothing for stoppedAfter.
	stopped bool
	// saturated: attempts have waited for the key without a break for
	// saturatedAfter and saturatedGrants grants, so rate is the key's
	// speed, not the demand's.
	saturated bool
}

func newBacklog() *backlog { return &backlog{keys: make(map[string]*keyBacklog)} }

// arrive records an attempt for key, back from a snooze or new. It may wait
// (ok) unless maxWaiters (> 0) attempts already do; if not, it is told how
// many attempts are ahead of it and how fast the key has been granting.
func (b *backlog) arrive(key, id string, maxWaiters int, now time.Time) (ok bool, p pace) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := b.keys[key]
	if k == nil {
		k = &keyBacklog{snoozed: make(map[string]time.Time)}
		b.keys[key] = k
	}
	delete(k.snoozed, id)
	k.sweep(now)
	if maxWaiters > 0 && k.waiting >= maxWaiters {
		p = pace{ahead: k.waiting + len(k.snoozed)}
		p.rate, p.stopped = k.grantRate(now)
		p.saturated = k.waiting > 0 && now.Sub(k.busySince) >= saturatedAfter && k.busyGrants >= saturatedGrants
		return false, p
	}
	if k.waiting == 0 {
		k.busySince, k.busyGrants = now, 0
	}
	k.waiting++
	return true, pace{}
}

// grantRate is how fast the key grants this process leases while it
// grants: its rate as of its last grant (as rateAt corrects it for the time
// it has been measuring). A key that has granted nothing for stoppedAfter
// is stopped; one that never granted has rate 0. Its rate now, which
// decays between grants, would take a pause of a second or two for a key a
// hundred times slower.
func (k *keyBacklog) grantRate(now time.Time) (rate float64, stopped bool) {
	if k.last.IsZero() {
		return 0, false
	}
	if now.Sub(k.last) > stoppedAfter {
		return 0, true
	}
	measured := 1 - math.Exp(-now.Sub(k.first).Seconds()/grantRateWindow.Seconds())
	if measured < 0.01 {
		return 0, false // a few milliseconds: too soon to tell
	}
	return k.rate / measured, false
}

// left records the end of a wait, granted or not.
func (b *backlog) left(key string, granted bool, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := b.keys[key]
	if k == nil {
		return
	}
	k.waiting--
	if granted {
		if k.first.IsZero() {
			k.first = now
		}
		k.rate = k.decayed(now) + 1/grantRateWindow.Seconds()
		k.last = now
		k.busyGrants++
	}
	b.forgetIdle(key, k)
}

// snoozed records an attempt given back to the engine until now+after.
func (b *backlog) snoozed(key, id string, after time.Duration, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	k := b.keys[key]
	if k == nil {
		k = &keyBacklog{snoozed: make(map[string]time.Time)}
		b.keys[key] = k
	}
	k.snoozed[id] = now.Add(after)
	k.sweep(now)
}

// sweep forgets, now and then, snoozed attempts long overdue.
func (k *keyBacklog) sweep(now time.Time) {
	if now.Before(k.nextSweep) {
		return
	}
	k.nextSweep = now.Add(sweepEvery)
	for id, due := range k.snoozed {
		if now.Sub(due) > lostAfter {
			delete(k.snoozed, id)
		}
	}
}

// forgetIdle drops a key nobody waits for: its rate matters only to a
// backlog, and a new backlog measures it again.
func (b *backlog) forgetIdle(key string, k *keyBacklog) {
	if k.waiting == 0 && len(k.snoozed) == 0 {
		delete(b.keys, key)
	}
}

// rateAt is the grant rate at now. A fresh average starts from zero and
// would take a few windows to reach the true rate, sending the first
// attempts turned away much too far; it is corrected for the time it has
// been measuring, so it is right from the start.
func (k *keyBacklog) rateAt(now time.Time) float64 {
	if k.last.IsZero() {
		return 0
	}
	measured := 1 - math.Exp(-now.Sub(k.first).Seconds()/grantRateWindow.Seconds())
	if measured < 0.01 {
		return 0 // a few milliseconds: too soon to tell
	}
	return k.decayed(now) / measured
}

func (k *keyBacklog) decayed(now time.Time) float64 {
	if k.last.IsZero() {
		return 0
	}
	return k.rate * math.Exp(-now.Sub(k.last).Seconds()/grantRateWindow.Seconds())
}

// waitingFor reports the attempts waiting for key (for tests).
func (b *backlog) waitingFor(key string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if k := b.keys[key]; k != nil {
		return k.waiting
	}
	return 0
}
