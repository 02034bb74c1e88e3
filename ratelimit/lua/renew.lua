-- renew: extend a lease, recording it again if it is missing.
-- ARGV: now_us ('' = Redis TIME), lease_id, rate, burst, ttl_us, recovery_us,
--       keep_ms
-- Returns {restored, expires, in_use, expired, lost}.
local now = now_us(ARGV[1])
local id = ARGV[2]
local ttl = tonumber(ARGV[5])
local w = {}
local _, _, held, lost = open(now, id, tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[6]), w)
local expired = expire_leases(now)
local restored = 1
if held and held > now then restored = 0 end
local expires = now + ttl
w[#w + 1] = num(expires)
w[#w + 1] = id
save(w, ttl, tonumber(ARGV[7]))
return {restored, expires, count_leases(), expired, lost}
