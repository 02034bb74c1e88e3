// Package ratelimit holds external providers to their limits, "at most N calls
// in flight and R calls per second", across every worker process, through
// worker crashes and Redis restarts.
//
// It may import the engine package (for the activity interceptor) and
// third-party libraries, and none of graft's other packages.
//
// # Limits and leases
//
// A Limiter enforces Limits per key: a provider, or a provider and an
// account. Acquire takes a lease, one of the key's Concurrency slots; Release
// gives it back. A lease expires on its own after LeaseTTL, so a worker killed
// while holding slots gives them back within one TTL; a call that runs longer
// renews its lease (Hold does this in the background). Acquiring again with
// the same lease ID returns the same lease, so a retried call never holds two
// slots.
//
// The rate is a GCRA (the generic cell rate algorithm, a token bucket kept as
// one timestamp) with an explicit Burst: in any window of t seconds at most
// Burst + Rate*t leases are granted. Burst defaults to 1, not to Rate, because
// a bucket as large as the rate lets almost twice the rate through within one
// second. A denial that only waits for time says exactly when to retry, so a
// waiter that follows the hints uses the whole rate; with Burst 1 every
// scheduling delay in waking up is rate lost, so Burst 2 or more suits callers
// that wait.
//
// Each call is one atomic Lua script and one round trip. Acquire checks the
// concurrency slot first and spends a rate token only when a slot is also
// free, so calls denied for concurrency do not use up the rate. A denial is a
// *DeniedError that says which limit denied it (ReasonConcurrency, ReasonRate,
// ReasonRecovering) and when to retry.
//
// Limits come from a LimitsSource consulted on every call, so they change at
// run time without restarts: raise a limit and the next call sees it; lower it
// and no new slot is granted until enough leases end. When the rate changes,
// debt run up under the old rate is capped at what the new limits allow.
//
// # Operators' overrides and introspection
//
// An Inspector, which needs only the Redis client and the prefix, lists the
// keys the limiters sharing a prefix use (as they report them: no scan of
// the keyspace), with their leases in flight (read
// from the state), recent rate and throttled waiters (reported by the
// limiters), and sets or clears an operator's Override of a key's
// Concurrency, Rate and Burst ("{Prefix}:overrides", a hash). Each
// RedisLimiter reads the overrides and writes its report (a hash
// "{Prefix}:report:<instance>" that expires after 2 minutes, whose waiters
// count for 10 s, listed in the sorted set "{Prefix}:reporters", and
// per-second grant counters "{Prefix:key}:grants:<second>") once per
// RedisConfig.RefreshInterval, in one pipelined round trip made by the first
// call that finds the last refresh due, so an override reaches every active
// limiter within about that interval, and the hot path still answers from
// memory. An override applies only to keys the Limits source gives limits
// for, so it cannot lift the refusal of unknown keys; a refresh that fails
// keeps the overrides last read. The reports are best effort: the waiters of
// a process that stops reporting drop out after 10 s.
//
// # Redis layout
//
// All of a key's state is one sorted set, "{Prefix:key}:state": lease IDs
// scored by expiry, plus two members with negative scores, an epoch marker and
// the GCRA timestamp. One key means one read and one write per call and no
// cross-slot access on Redis Cluster; the braces are a hash tag so that any
// key added later for the same limiter key lands in the same slot. It also
// means that whatever loses the leases loses the marker with them, so a loss is
// never silent. The set lives MarkerTTL (7 days) past its last grant or
// renewal. One more key per prefix, "{Prefix}:instance", tells new keys from
// lost ones (see below). Redis 6.2 or later is needed (for ZMSCORE). Run it with
// maxmemory-policy noeviction: an evicted key is detected like any other loss,
// but costs its key a recovery window.
//
// # Time
//
// The scripts read Redis's clock (TIME) by default. Every worker then measures
// leases and rates against one clock, the one on the Redis primary holding the
// key, so worker clocks need not agree and a worker whose clock is off cannot
// stretch or shorten leases for everyone. The cost is a TIME call inside each
// script, about a microsecond of Redis CPU. A Clock in RedisConfig replaces it
// with the caller's time, passed as an argument; tests use that to move time
// by hand and to check the scripts step by step against a model. Using a Clock
// in production would require all workers' clocks to be in close sync, since
// a worker with a fast clock expires other workers' leases early.
//
// # When Redis loses its data
//
// After a restart without persistence or a flush, the leases held by live
// workers are unknown. Granting the full limit at once could double the calls
// in flight, and a fresh bucket would add a burst. So when a script finds a
// key's epoch marker missing, it writes the marker back and:
//
//   - sets the GCRA state to a bucket spent to its limit, the most any lost
//     state could have held, so no burst follows the loss;
//   - opens a recovery window, by default one LeaseTTL, during which no new
//     concurrency slot is granted (ReasonRecovering, with the window's end as
//     the retry hint). Renewals are accepted and record their leases again,
//     up to the key's Concurrency: every live holder renews within one TTL,
//     so when the window closes the set holds every live lease and counting
//     is exact again. Acquiring with a lease ID that is already recorded
//     still returns it.
//
// A key that has never been used has no state either, but it is new, not
// lost, and waits for nothing. The two are told apart by one more key per
// prefix, "{Prefix}:instance", which holds the time from which this Redis has
// kept the prefix's state and goes with everything else when Redis loses its
// data. A lease live at a loss is recorded again by its holder's renewal
// within one LeaseTTL, which creates its key's state; so a key still without
// state a recovery window after that time had no live lease, and is granted
// its slots and its whole burst at once (so is a key idle for longer than
// MarkerTTL). Only a Redis the prefix has never used, which looks exactly like
// one that lost everything, makes its first keys wait one window. On Redis
// Cluster (or a Ring), where one script may not read two slots, every key
// without state is treated as lost. RecoveryWindow < 0 turns the protection
// off for deployments that accept the risk.
//
// Not detected: a Redis that restarts from a snapshot (RDB, or AOF without
// fsync on every write), or a replica promoted after a failover, can come
// back with the marker but without the last writes. Leases granted in that
// gap are recorded again at their holders' next renewal (within a third of
// a LeaseTTL), and until then up to that many extra slots can be granted.
//
// # Fail closed
//
// When Redis cannot be reached, or answers with an error, calls return an
// *UnavailableError and nothing is granted. Wait and Hold keep retrying with
// backoff (20ms doubling to 1s) until their maximum wait, then return a
// *engine.SnoozeError wrapping the failure, so work waits in the queue without
// spending retry attempts and resumes by itself when Redis returns. Leases held
// across an outage stay counted until they expire; Hold keeps renewing, more
// often while renewals fail, so they are recorded again soon after Redis
// returns, and stops the call if none succeeds within its TTL.
//
// # Without Redis
//
// NewLocalLimiter is the embedded default when no Redis is configured. It has
// the same semantics (minus data loss) within one process and knows nothing of
// other processes: with two workers, each allows the whole limit. Use it for a
// single process, for tests, or for limits meant per worker: NewWorkerLimiter
// caps the activities one worker runs at once and starts per second.
//
// # Waiting
//
// Acquire never waits. Wait retries with the limiter's hints up to a maximum
// wait and then returns an *engine.SnoozeError with an After, so a caller can give
// the work back rather than hold a worker while a provider is saturated. Within
// one process the waiters for a key form a queue and only the one at its head
// polls, so a million waiting operations cost Redis one poll per key per
// process per PollInterval, not one per operation, and a release in the process
// wakes the next waiter at once. Across processes, waiters see other
// processes' releases only when they poll.
//
// Hold is Wait plus background renewal until Release; an activity interceptor
// is Hold before the call, Release after it, and a snooze on *engine.SnoozeError.
//
// # Losing a lease
//
// A lease can run out under a live call: its process was paused (a stop, a
// long garbage collection, a starved machine) or cut off from Redis for
// longer than the LeaseTTL, and meanwhile its slot may have gone to another
// caller. A renewal then records the lease again only if the key has a free
// slot; otherwise it is refused with ErrLeaseLost, so a key never counts more
// leases than its Concurrency. Hold stops the call the moment it learns the
// lease may be gone: it cancels Held.Context when a renewal is refused, and
// when no renewal has succeeded for a whole TTL, without waiting to ask. The
// activity interceptor runs the activity under that context and gives an
// attempt that failed that way back to the engine as a snooze.
//
// # Activity interceptor
//
// NewActivityInterceptor applies a Limiter to engine activities. A KeyFunc
// picks each attempt's key from the activity's name, input or headers
// (KeyByActivity, KeyFromInput, KeyFromHeader). The attempt holds a lease,
// named by the step's idempotency key, for the whole call. When no slot comes
// within MaxWait (default 200ms), or Redis is unreachable, the attempt returns
// engine.Snooze: the engine frees the worker's activity slot, waits, and runs
// the attempt again without counting a retry. Past MaxWaiters attempts of one
// process waiting for a key, further attempts are snoozed at once, so a
// saturated provider's backlog holds few activity slots and other providers'
// work keeps flowing.
//
// Per-worker limits (activities at once, started per second) are the
// engine's, in engine.WorkerConfig; NewWorkerLimiter with KeyConst(WorkerKey)
// makes them snooze instead of block.
//
// A provider that counts calls per calendar second allows R calls in
// [s, s+1). A GCRA with burst B grants up to B+Rate-1 in such a window, so
// configure Rate = R-(B-1), a little less to absorb the network's jitter:
// `graft bench -scenario provider` uses Burst 8 and Rate (R-7)*0.99.
//
// # Metrics
//
// Both limiters report through OpenTelemetry (RedisConfig.MeterProvider, nil
// for the global provider): slots in use and the concurrency limit per key
// (as last seen by this process), acquisitions by outcome, wait duration and
// snoozes, leases that expired unreleased, leases that renewals recorded
// again, and store errors. See the Metric* constants.
//
// # Performance
//
// `graft bench -scenario redis-ops` measures acquire plus release against a
// real Redis. On loopback each call costs one round trip and a few
// microseconds of Redis CPU.
package ratelimit
