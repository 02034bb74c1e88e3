-- acquire: take a slot and, only if a slot is free, a rate token.
-- ARGV: now_us ('' = Redis TIME), lease_id, concurrency, rate, burst, ttl_us,
--       recovery_us, keep_ms
-- Returns {status, reason, t, in_use, expired, lost} where status is 1 granted,
-- 2 already held (same lease ID), 0 denied; t is the lease expiry when granted
-- and the retry-after in microseconds when denied; reason is 1 concurrency,
-- 2 rate, 3 recovering.
local now = now_us(ARGV[1])
local id = ARGV[2]
local concurrency = tonumber(ARGV[3])
local rate = tonumber(ARGV[4])
local burst = tonumber(ARGV[5])
local ttl = tonumber(ARGV[6])
local keep_ms = tonumber(ARGV[8])
local w = {}
local recover_until, tat, held, lost = open(now, id, rate, burst, tonumber(ARGV[7]), w)
local expired = expire_leases(now)
local in_use = count_leases()
local expires = now + ttl

local function deny(reason, retry)
  save(w, ttl, keep_ms)
  return {0, reason, math.ceil(retry), in_use, expired, lost}
end

if held and held > now then
  w[#w + 1] = num(expires)
  w[#w + 1] = id
  save(w, ttl, keep_ms)
  return {2, 0, expires, in_use, expired, lost}
end

if concurrency > 0 then
  if now < recover_until then
    return deny(3, recover_until - now)
  end
  if in_use >= concurrency then
    local first = redis.call('ZRANGEBYSCORE', KEYS[1], '(0', '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    return deny(1, tonumber(first[2]) - now)
  end
end

if rate > 0 then
  local interval = 1000000 / rate
  local tolerance = burst * interval
  if tat < now then tat = now end
  -- After a rate change the stored TAT can lie beyond what the new limits
  -- could ever reach; cap it at a fully spent bucket under the new limits,
  -- and store the cap, or every later call would cap it again from its own
  -- now and the old debt would never be paid off.
  if tat > now + tolerance then
    tat = now + tolerance
    w[#w + 1] = num(-tat)
    w[#w + 1] = TAT
  end
  local new_tat = tat + interval
  if new_tat - now > tolerance then
    return deny(2, new_tat - tolerance - now)
  end
  w[#w + 1] = num(-new_tat)
  w[#w + 1] = TAT
end

w[#w + 1] = num(expires)
w[#w + 1] = id
save(w, ttl, keep_ms)
return {1, 0, expires, in_use + 1, expired, lost}
