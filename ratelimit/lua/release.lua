-- release: give a lease back. It leaves the marker alone: a release grants
-- nothing, so it has nothing to protect.
-- ARGV: now_us ('' = Redis TIME), lease_id
-- Returns {removed, in_use, expired}.
local now = now_us(ARGV[1])
local expired = expire_leases(now)
local removed = redis.call('ZREM', KEYS[1], ARGV[2])
return {removed, count_leases(), expired}
