-- renew: extend a lease. A lease that is no longer recorded (it expired, or
-- the key's state was lost) is recorded again only if the key has a free
-- slot: its call is still running, so counting it is the truth, but if its
-- slot was given to another caller meanwhile, recording it would make the key
-- hold one call more than its concurrency, and the holder must stop instead.
-- ARGV: now_us ('' = Redis TIME), lease_id, concurrency, rate, burst, ttl_us,
--       recovery_us, keep_ms
-- Returns {status, expires, in_use, expired, lost} where status is 0 renewed,
-- 1 recorded again, 2 refused (expires is then 0).
local now = now_us(ARGV[1])
local id = ARGV[2]
local concurrency = tonumber(ARGV[3])
local ttl = tonumber(ARGV[6])
local w = {}
local _, _, held, lost = open(now, id, tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[7]), w)
local expired = expire_leases(now)
local status = 0
if not (held and held > now) then
  status = 1
  if concurrency > 0 and count_leases() >= concurrency then
    save(w, ttl, tonumber(ARGV[8]))
    return {2, 0, count_leases(), expired, lost}
  end
end
local expires = now + ttl
w[#w + 1] = num(expires)
w[#w + 1] = id
save(w, ttl, tonumber(ARGV[8]))
return {status, expires, count_leases(), expired, lost}
