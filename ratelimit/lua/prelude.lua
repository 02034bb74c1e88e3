-- Shared head of every ratelimit script; Go prepends it to each script body.
--
-- KEYS[1] holds all of one limiter key's state in one sorted set:
--   each lease ID, scored by its expiry;
--   EPOCH, scored by minus the end of the key's recovery window;
--   TAT, scored by minus the GCRA theoretical arrival time.
-- The metadata has negative scores, so the score range (0, +inf] holds the
-- leases alone. One key means one read (ZMSCORE) and one write (ZADD) per
-- call, and whatever loses the leases (a restart without persistence, a flush,
-- an eviction) loses the marker with them, so the loss is always detected.
--
-- Times are microseconds as Lua numbers (doubles, exact up to 2^53, which is
-- the year 2255). Numbers go to Redis through num(): a Lua number passed to
-- redis.call is formatted with %.14g, which drops the low digits.

-- Redis < 5 needs this before writing after TIME; later versions ignore it.
if redis.replicate_commands then redis.replicate_commands() end

local EPOCH = '\0epoch'
local TAT = '\0tat'

-- The state key lives at least this long (ms) past a lease's expiry, so it
-- cannot expire under a lease even when an injected clock runs behind Redis's.
local EXPIRY_MARGIN_MS = 60000

local function now_us(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function num(x)
  return string.format('%.17g', x)
end

-- is_new tells a key that has never been used (or was idle past MarkerTTL)
-- from one whose state was lost. KEYS[2], when given, is the prefix's
-- instance marker: the time, by the scripts' clock, from which this Redis has
-- kept the prefix's state. It goes with everything else when Redis loses its
-- data. A lease that was live at the loss is recorded again by its holder's
-- renewal within one LeaseTTL, and that renewal creates the key's state; so a
-- key still without state a recovery window after the marker's time had no
-- live lease: it is new. Without KEYS[2] (Redis Cluster, where a script may
-- not read two slots) every key without state is treated as lost.
local function is_new(now, recovery_us)
  if not KEYS[2] then return false end
  local since = redis.call('GET', KEYS[2])
  if not since then
    redis.call('SET', KEYS[2], num(now))
    return false
  end
  return now >= tonumber(since) + recovery_us
end

-- open reads the marker, the TAT and lease id in one call. When the marker is
-- missing, the key is new (see is_new), and the marker is written back
-- without a window; or its state was lost: the marker is written back with a
-- recovery window, and the TAT is moved to a bucket spent to its limit, the
-- most any lost state could have held, so no burst follows the loss. Writes
-- are queued in w as score, member pairs.
-- A negative recovery_us turns the protection off: the marker is written back
-- without a window and the TAT is left alone.
-- Returns the recovery window's end, the TAT (0 if none), the lease's expiry
-- (nil if not held) and 1 if the state was lost.
local function open(now, id, rate, burst, recovery_us, w)
  local s = redis.call('ZMSCORE', KEYS[1], EPOCH, TAT, id)
  local tat = 0
  if s[2] then tat = -tonumber(s[2]) end
  local lease
  if s[3] then lease = tonumber(s[3]) end
  if s[1] then
    return -tonumber(s[1]), tat, lease, 0
  end
  if recovery_us < 0 or is_new(now, recovery_us) then
    w[#w + 1] = num(-now)
    w[#w + 1] = EPOCH
    if recovery_us < 0 then return now, tat, lease, 1 end
    return now, tat, lease, 0
  end
  local recover_until = now + recovery_us
  w[#w + 1] = num(-recover_until)
  w[#w + 1] = EPOCH
  if rate > 0 then
    local spent = now + burst * (1000000 / rate)
    if tat < spent then
      tat = spent
      w[#w + 1] = num(-tat)
      w[#w + 1] = TAT
    end
  end
  return recover_until, tat, lease, 1
end

-- expire_leases drops leases whose expiry has passed and returns how many.
local function expire_leases(now)
  return redis.call('ZREMRANGEBYSCORE', KEYS[1], '(0', num(now))
end

local function count_leases()
  return redis.call('ZCOUNT', KEYS[1], '(0', '+inf')
end

-- save applies the queued writes and keeps the key alive for keep_ms, or for
-- ttl past now if that is longer.
local function save(w, ttl, keep_ms)
  if #w == 0 then return end
  redis.call('ZADD', KEYS[1], unpack(w))
  local ms = math.max(keep_ms, math.ceil(ttl / 1000) + EXPIRY_MARGIN_MS)
  redis.call('PEXPIRE', KEYS[1], string.format('%d', ms))
end
