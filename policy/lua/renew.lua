-- lockproxy: the proxy's own renewal of the locks whose holders are still connected.
-- KEYS: per lock, the lock and its lease record. ARGV: per lock, its acquire id and the TTL
-- in ms to give it. A lock is renewed only while its record still holds that acquire id.
-- Returns one integer per lock: 1 renewed, 0 no longer that lease.
local out = {}
for i = 1, #KEYS, 2 do
  local id, ttl = ARGV[i], ARGV[i + 1]
  if redis.call('hget', KEYS[i + 1], 'id') == id and redis.call('pexpire', KEYS[i], ttl) == 1 then
    redis.call('pexpire', KEYS[i + 1], ttl)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
