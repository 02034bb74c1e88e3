package ratelimit

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"time"

	"github.com/graftdev/graft/engine"
)

// Defaults for InterceptorConfig.
const (
	// DefaultMaxWait is how long an attempt waits for a slot, holding its
	// worker's activity slot, before it is given back to the engine. Long
	// enough that a slot freed or a rate token due within a few polls is
	// taken in place; short enough that a saturated provider does not tie up
	// the worker.
	DefaultMaxWait = 200 * time.Millisecond
	// DefaultMaxWaiters is how many attempts of one process may wait for the
	// same key at once; the rest are given back at once.
	DefaultMaxWaiters = 16
	// DefaultReleaseTimeout bounds the Release after an attempt.
	DefaultReleaseTimeout = 5 * time.Second
)

const (
	// minSnooze keeps a snoozed attempt from coming back sooner than this:
	// below it a snooze costs the engine more than it saves.
	minSnooze = 10 * time.Millisecond
	// minOverflowSnooze is the shortest snooze of an attempt turned away
	// because too many others wait.
	minOverflowSnooze = 20 * time.Millisecond
	// maxOverflowSnooze is the longest: a backlog that would take longer to
	// serve is looked at again this often, in case the key speeds up. Each
	// snooze of a run costs the engine an unload and a load (two commits
	// and a replay), so a backlog looked at every few seconds costs that
	// much per attempt every few seconds: at 5s, the chaos bench's 20,000
	// renewals behind a 16-slot key were loaded 120 times per renewal
	// closed, and the commits they queued held the key's slots for seconds
	// each (8 grants/s of 300 allowed).
	maxOverflowSnooze = time.Minute
	// unsureOverflowSnooze is the longest snooze when the grant rate says
	// little of the key's speed: the key grants nothing (see stoppedAfter),
	// or it has not been saturated for long (see saturatedAfter), so that
	// it granted what it was asked for. Longer snoozes would ask it for
	// less still.
	unsureOverflowSnooze = 5 * time.Second
)

// errTooManyWaiters is the cause of a snooze that never waited: MaxWaiters
// attempts of this process were already waiting for the key.
var errTooManyWaiters = errors.New("ratelimit: too many attempts of this process already waiting for the key")

// KeyFunc names the limiter key an activity attempt counts against: a
// provider, or a provider and an account. ok false leaves the attempt
// unlimited. It runs on every attempt, so it must answer from memory.
type KeyFunc func(in *engine.ActivityInput) (key string, ok bool)

// KeyFromHeader takes the key from the named run header (see
// engine.StartOptions.Headers); attempts without it, or with it empty, are
// not limited.
func KeyFromHeader(name string) KeyFunc {
	return func(in *engine.ActivityInput) (string, bool) {
		k := in.Headers[name]
		return k, k != ""
	}
}

// KeyByActivity maps activity names to keys, for activities that each call
// one provider; activities not in the map are not limited. The map is copied.
func KeyByActivity(keys map[string]string) KeyFunc {
	m := maps.Clone(keys)
	return func(in *engine.ActivityInput) (string, bool) {
		k, ok := m[in.Info.ActivityName]
		return k, ok && k != ""
	}
}

// KeyFromInput takes the key from the activity's decoded input when it is an
// In, through f; other activities are not limited.
func KeyFromInput[In any](f func(In) (string, bool)) KeyFunc {
	return func(in *engine.ActivityInput) (string, bool) {
		v, ok := in.Args.(In)
		if !ok {
			return "", false
		}
		k, ok := f(v)
		return k, ok && k != ""
	}
}

// KeyConst counts every attempt against key. With NewWorkerLimiter and
// WorkerKey it makes the per-worker knobs snooze instead of block; see
// ActivityInterceptor.
func KeyConst(key string) KeyFunc {
	return func(*engine.ActivityInput) (string, bool) { return key, true }
}

// InterceptorConfig configures an ActivityInterceptor. The zero value of each
// field other than Limiter and Key means its documented default.
type InterceptorConfig struct {
	// Limiter holds the keys to their limits: a *RedisLimiter to share limits
	// across processes, a *LocalLimiter for one process. Its LimitsSource is
	// consulted on every attempt, so a LimitsTable changed at run time takes
	// effect at once. Required.
	Limiter Limiter
	// Key names the key each attempt counts against. Required.
	Key KeyFunc
	// MaxWait is how long an attempt waits for a slot before it is given back
	// to the engine, which runs it again after the snooze's After
	// without counting a retry attempt. The wait holds a worker's activity
	// slot; the snooze does not. It is also capped at half of what is left of
	// the attempt's own deadline. Default DefaultMaxWait; negative: try once,
	// never wait.
	MaxWait time.Duration
	// MaxWaiters bounds how many attempts of this process wait for one key at
	// once. Attempts past it are snoozed at once, without waiting and without
	// a call to the limiter, so a provider's backlog ties up at most this many
	// of a worker's activity slots (besides the calls it has in flight) and
	// never starves other providers' activities. A waiter beyond the number
	// the key can serve within MaxWait would hold a slot only to be snoozed
	// anyway. An attempt sent away comes back when about as many attempts as
	// are ahead of it (waiting or snoozed, in this process) have been
	// granted, judging by the key's recent grant rate, up to a minute later
	// (5s unless the key has been saturated for a while); so a deep backlog
	// costs about one snooze per grant, not one per attempt per MaxWait.
	// Default DefaultMaxWaiters; negative: no bound.
	MaxWaiters int
	// LeaseID names an attempt's lease. Default: the activity's
	// IdempotencyKey, which is the same for every attempt of a step, on any
	// worker. So a step that runs again after its worker died, while the dead
	// worker's lease still counts, takes that lease over instead of a second
	// slot: the step counts once. The cost is that two copies of one step
	// running at once (a worker cut off from the database while another
	// resumes its run) share one slot.
	LeaseID func(in *engine.ActivityInput) string
	// OnSnooze, if set, is called for every attempt given back to the
	// engine, with why (err.Err: a *DeniedError, an *UnavailableError, or
	// the process's own queue being full) and when it will run again. Use it
	// for logs; the limiter's metrics already count snoozes per key.
	OnSnooze func(ctx context.Context, in *engine.ActivityInput, err *engine.SnoozeError)
	// ReleaseTimeout bounds the Release after an attempt. A release that
	// fails or times out leaves the lease to expire on its own (LeaseTTL).
	// Default DefaultReleaseTimeout.
	ReleaseTimeout time.Duration
	// Logger receives failed releases. Default slog.Default().
	Logger *slog.Logger
}

// Validate reports the first field that makes no sense, by name.
func (c InterceptorConfig) Validate() error {
	switch {
	case c.Limiter == nil:
		return errors.New("ratelimit: InterceptorConfig.Limiter is required")
	case c.Key == nil:
		return errors.New("ratelimit: InterceptorConfig.Key is required")
	case c.ReleaseTimeout < 0:
		return fmt.Errorf("ratelimit: InterceptorConfig.ReleaseTimeout must be >= 0, got %s", c.ReleaseTimeout)
	}
	return nil
}

func (c InterceptorConfig) withDefaults() InterceptorConfig {
	switch {
	case c.MaxWait == 0:
		c.MaxWait = DefaultMaxWait
	case c.MaxWait < 0:
		c.MaxWait = 0
	}
	c.MaxWaiters = cmp.Or(c.MaxWaiters, DefaultMaxWaiters)
	if c.LeaseID == nil {
		c.LeaseID = defaultLeaseID
	}
	c.ReleaseTimeout = cmp.Or(c.ReleaseTimeout, DefaultReleaseTimeout)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

func defaultLeaseID(in *engine.ActivityInput) string {
	if in.Info.IdempotencyKey != "" {
		return in.Info.IdempotencyKey
	}
	w := in.Info.Workflow
	return w.WorkflowID + "/" + w.RunID + "/" + in.Info.ActivityID
}

// ActivityInterceptor holds activity calls to their provider's limits across
// every worker: it takes a lease before the call (Hold) and gives it back
// after, and when no slot comes within MaxWait it gives the attempt back to
// the engine with engine.Snooze, which runs it again later without counting a
// retry attempt and without holding a worker's activity slot meanwhile.
//
// It fails closed: while the limiter cannot reach Redis no slot is granted,
// attempts are snoozed (those that waited, with a backoff of up to a second;
// those turned away, for about as long as the backlog ahead of them takes,
// up to a minute, and for a few seconds at most once the key has granted
// nothing for stoppedAfter) and they run by themselves when Redis returns. Any other limiter error (no limits for the
// key in a LimitsTable, invalid limits) fails the attempt, which the engine
// retries under the activity's retry policy, so a misconfiguration is seen.
//
// Per-worker limits are not its business: engine.WorkerConfig.MaxActivities
// and ActivitiesPerSecond bound what one worker runs, before any interceptor.
// Note that the engine counts every attempt against ActivitiesPerSecond,
// snoozed ones included. To have per-worker limits snooze instead of block,
// add a second ActivityInterceptor with a NewWorkerLimiter and
// KeyConst(WorkerKey) inside this one.
//
// To hold one call to two keys (a provider, and an account at it), chain two
// interceptors, the wider key outermost: the outer lease is held while the
// inner one is waited for, at most MaxWait.
//
// It implements engine.ActivityInterceptor only; list it in
// engine.Config.Interceptors or engine.WorkerConfig.Interceptors.
type ActivityInterceptor struct {
	engine.InterceptorBase

	cfg     InterceptorConfig
	hooks   waitHooks // nil when the limiter is not one of ours
	backlog *backlog
}

var _ engine.ActivityInterceptor = (*ActivityInterceptor)(nil)

// NewActivityInterceptor validates cfg and returns the interceptor.
func NewActivityInterceptor(cfg InterceptorConfig) (*ActivityInterceptor, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	i := &ActivityInterceptor{cfg: cfg.withDefaults(), backlog: newBacklog()}
	i.hooks, _ = cfg.Limiter.(waitHooks)
	return i, nil
}

// ExecuteActivity implements engine.ActivityInterceptor.
func (i *ActivityInterceptor) ExecuteActivity(ctx context.Context, in *engine.ActivityInput,
	next engine.ActivityNext) (any, error) {
	key, ok := i.cfg.Key(in)
	if !ok {
		return next(ctx, in)
	}
	id := i.cfg.LeaseID(in)
	mayWait, p := i.backlog.arrive(key, id, i.cfg.MaxWaiters, time.Now())
	if !mayWait {
		sn := newSnooze(key, i.overflowSnooze(p), errTooManyWaiters)
		if i.hooks != nil {
			i.hooks.observeWait(context.WithoutCancel(ctx), key, 0, "snoozed")
		}
		return nil, i.snooze(ctx, in, key, id, sn)
	}
	held, err := Hold(ctx, i.cfg.Limiter, key, id, i.maxWait(ctx))
	i.backlog.left(key, err == nil, time.Now())
	if err != nil {
		var sn *engine.SnoozeError
		if errors.As(err, &sn) {
			return nil, i.snooze(ctx, in, key, id, sn)
		}
		return nil, err
	}
	// Deferred so that the slot comes back even when the activity panics;
	// the engine recovers the panic further out.
	defer i.release(ctx, held)
	out, err := next(held.Context(), in)
	if err != nil {
		if lost := held.Lost(); lost != nil {
			// The call was stopped because its slot may be someone else's:
			// it runs again when it gets a slot, without spending a retry.
			return nil, i.snooze(ctx, in, key, id, newSnooze(key, i.cfg.MaxWait, lost))
		}
	}
	return out, err
}

// maxWait is MaxWait, cut to half of what is left of the attempt's deadline
// so that waiting never makes the attempt time out (which would cost an
// attempt).
func (i *ActivityInterceptor) maxWait(ctx context.Context) time.Duration {
	d := i.cfg.MaxWait
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl)/2)
	}
	return max(d, 0)
}

// overflowSnooze is the snooze of an attempt turned away without waiting,
// with p.ahead attempts of this process before it and the key granting
// p.rate leases a second to this process. It comes back at a random moment
// in the second half of the time those take: a little early costs one more
// snooze, late would leave the key idle. Before the key has granted
// anything to go by it comes back after one or two MaxWait. If the backlog
// would take longer than a limit, or the key stopped granting, after half
// to all of the limit: maxOverflowSnooze while the key is saturated,
// unsureOverflowSnooze while its rate is no measure of its speed.
func (i *ActivityInterceptor) overflowSnooze(p pace) time.Duration {
	base := max(i.cfg.MaxWait, minOverflowSnooze)
	limit := maxOverflowSnooze
	if p.stopped || !p.saturated {
		limit = unsureOverflowSnooze
	}
	if p.stopped {
		return limit/2 + rand.N(limit/2)
	}
	if p.rate <= 0 {
		return base + rand.N(base)
	}
	est := time.Duration(float64(p.ahead+1) / p.rate * float64(time.Second))
	if est <= 0 || est > limit {
		// Too long to trust (or to hold a caller's work back without a
		// look); the grant rate may change.
		return limit/2 + rand.N(limit/2)
	}
	return max(est/2+rand.N(est/2+1), minOverflowSnooze)
}

// snooze adds jitter to sn, so that attempts snoozed together do not all
// come back together, reports it and gives it to the engine.
func (i *ActivityInterceptor) snooze(ctx context.Context, in *engine.ActivityInput, key, id string, sn *engine.SnoozeError) error {
	after := max(sn.After, minSnooze)
	if !errors.Is(sn.Err, errTooManyWaiters) {
		after += rand.N(after/4 + 1)
	}
	sn.After = after
	i.backlog.snoozed(key, id, after, time.Now())
	if i.cfg.OnSnooze != nil {
		i.cfg.OnSnooze(ctx, in, sn)
	}
	return sn
}

// release gives the slot back in a context that the activity's cancellation
// does not end: a cancelled call has stopped using the provider too.
func (i *ActivityInterceptor) release(ctx context.Context, held *Held) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), i.cfg.ReleaseTimeout)
	defer cancel()
	if err := held.Release(rctx); err != nil {
		lease := held.Lease()
		i.cfg.Logger.WarnContext(rctx, "ratelimit: release failed; the lease expires on its own",
			slog.String("key", lease.Key), slog.String("lease", lease.ID),
			slog.Duration("ttl", lease.TTL), slog.Any("error", err))
	}
}
