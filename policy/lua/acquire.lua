#!lua
-- lockproxy: acquire a lock and write its lease record, in one step.
-- The shebang (no flags) makes Redis judge the script as it judges SET: a write that is
-- refused under maxmemory (-OOM), on a read-only replica (-READONLY), on a stale replica
-- (-MASTERDOWN) and without enough replicas (-NOREPLICAS), before it runs, with its own error.
-- KEYS[1] the lock, KEYS[2] its lease record, KEYS[3] its history (see release.lua).
-- ARGV[1] the token; ARGV[2] unit: 'px' (relative), 'pxat' (absolute) or 'none' (no TTL:
-- audit mode forwards the client's command as it is); ARGV[3] the time in ms; ARGV[4] the
-- cap in ms ('0': none); ARGV[5] owner; ARGV[6] acquire id; ARGV[7] via; ARGV[8] 'get' to
-- answer as SET ... NX GET; ARGV[9] the record's TTL in ms when the lock gets none.
-- Returns {1, 0} when acquired, {0} when someone holds it ({0, old value} with 'get');
-- an error Redis gives the SET comes back unchanged.
-- Called with no keys (EVAL of the body queued in MULTI before the EVALSHAs that need it,
-- so that they find it loaded): nothing to do.
if #KEYS == 0 then return 0 end
local unit, val = ARGV[2], ARGV[3]
local cap = tonumber(ARGV[4])
if cap > 0 and unit ~= 'none' then
  local left = tonumber(val)
  if unit == 'pxat' then
    local t = redis.call('time')
    left = left - (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  end
  if left > cap then unit, val = 'px', ARGV[4] end
end
local args = {'set', KEYS[1], ARGV[1], 'nx'}
if ARGV[8] == 'get' then args[#args + 1] = 'get' end
if unit ~= 'none' then
  args[#args + 1] = unit
  args[#args + 1] = val
end
local r = redis.pcall(unpack(args))
if type(r) == 'table' and r.err then return r end
local got
if ARGV[8] == 'get' then got = (r == false) else got = (type(r) == 'table') end
if not got then
  if ARGV[8] == 'get' then return {0, r} end
  return {0}
end
local t = redis.call('time')
local since = t[1] .. string.format('%03d', math.floor(tonumber(t[2]) / 1000))
-- Every field is written: no stale one can survive from an earlier record.
redis.call('hset', KEYS[2], 'owner', ARGV[5], 'id', ARGV[6], 'token_sha1', redis.sha1hex(ARGV[1]),
           'since_ms', since, 'via', ARGV[7])
-- The record gets the lock's own expiry (the same unit and number, so no rounding).
local left
if unit == 'none' then
  redis.call('pexpire', KEYS[2], ARGV[9])
  left = tonumber(ARGV[9])
elseif unit == 'pxat' then
  redis.call('pexpireat', KEYS[2], val)
  left = tonumber(val) - (tonumber(t[1]) * 1000)
else
  redis.call('pexpire', KEYS[2], val)
  left = tonumber(val)
end
-- The history: the previous lease, when it was not released, ended by its TTL.
local h = redis.call('hmget', KEYS[3], 'a', 'r', 'e')
if h[1] and h[1] ~= h[2] then
  local e = h[1] .. ' ' .. (h[3] or '')
  local n, keep = 0, {}
  for id in string.gmatch(e, '%S+') do
    n = n + 1
    if n <= 16 then keep[n] = id end
  end
  redis.call('hset', KEYS[3], 'a', ARGV[6], 'e', table.concat(keep, ' '))
else
  redis.call('hset', KEYS[3], 'a', ARGV[6])
end
left = math.min(math.max(left, 0), 86400000) + 600000
redis.call('pexpire', KEYS[3], string.format('%d', left))
return {1, 0}
