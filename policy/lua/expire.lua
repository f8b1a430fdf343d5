#!lua flags=allow-oom
-- lockproxy: EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT of a lock key, checked against its lease record.
-- The shebang makes Redis judge the script as it judges EXPIRE: a write (-READONLY on a
-- read-only replica, -MASTERDOWN on a stale one, -NOREPLICAS) that runs under maxmemory.
-- KEYS[1] the lock, KEYS[2] its lease record, KEYS[3] its history (see release.lua).
-- ARGV[1] the requester's owner identity; ARGV[2] its acquire id on this connection ('' when
-- none, or a prefix ending in ':' as in release.lua); ARGV[3] its token's SHA-1; ARGV[4] 'pexpire' or 'pexpireat'; ARGV[5] the time in ms; ARGV[6]
-- the cap in ms ('0': none); ARGV[7] 'e' (enforce) or 'a' (audit: the client's command runs
-- as sent, and the verdict says what enforce would have done); ARGV[8..] the client's flags.
-- The holder's command moves the lock and its record (capped); another owner's becomes
-- PEXPIRE ... NX (a lock without a TTL gets one, a live one is never extended); a late
-- holder's is refused; a lock without a record gets the command as the client sent it.
-- Returns {verdict, reply}: verdict 0 the holder's, 1 another owner's, 2 late, 3 no record,
-- 4 no such key; reply what the client's command answers. Errors come back unchanged.
-- Called with no keys (EVAL of the body queued in MULTI before the EVALSHAs that need it,
-- so that they find it loaded): nothing to do.
if #KEYS == 0 then return 0 end
local lock, rec, hist = KEYS[1], KEYS[2], KEYS[3]
local v = redis.pcall('get', lock)
if v == false then return {4, 0} end
local cmd, val = ARGV[4], ARGV[5]
local flags = {}
for i = 8, #ARGV do flags[#flags + 1] = ARGV[i] end
local audit = ARGV[7] == 'a'
local function call(c, t, fl)
  local args = {c, lock, t}
  for _, f in ipairs(fl) do args[#args + 1] = f end
  return redis.pcall(unpack(args))
end
if type(v) ~= 'string' then
  local r = call(cmd, val, flags)
  if type(r) == 'table' and r.err then return r end
  return {3, r}
end
local r = redis.call('hmget', rec, 'owner', 'id', 'token_sha1')
local myid = ARGV[2]
local pre = string.sub(myid, -1) == ':'
local function mine(id)
  if not id then return false end
  if pre then return string.sub(id, 1, #myid) == myid end
  return id == myid
end
local verdict
if myid ~= '' and (mine(r[2]) or (not r[1] and not pre and redis.sha1hex(v) == ARGV[3])) then
  verdict = 0
elseif myid ~= '' then
  local h = redis.call('hmget', hist, 'a', 'r', 'e')
  local gone = (not pre and h[1] == myid and h[2] ~= myid)
  for id in string.gmatch(h[3] or '', '%S+') do
    if mine(id) then gone = true end
  end
  if gone then verdict = 2 end
end
if not verdict then
  if not r[1] or r[3] ~= redis.sha1hex(v) then verdict = 3
  elseif r[1] == ARGV[1] then verdict = 0
  else verdict = 1 end
end
if verdict == 2 and not audit then return {2, 0} end
local cap = tonumber(ARGV[6])
if verdict ~= 3 and cap > 0 and not audit then
  local left = tonumber(val)
  if cmd == 'pexpireat' then
    local t = redis.call('time')
    left = left - (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
  end
  if left > cap then cmd, val = 'pexpire', ARGV[6] end
end
local res
if verdict == 1 and not audit then
  res = call(cmd, val, {'nx'})
else
  res = call(cmd, val, flags)
end
if type(res) == 'table' and res.err then return res end
if verdict == 0 and r[1] and #flags == 0 and res == 1 then
  -- The record follows the lock: the same command and number.
  redis.call(cmd, rec, val)
elseif verdict == 0 and r[1] then
  -- With NX/XX/GT/LT the lock's TTL may not have moved: the record takes the lock's. A TTL
  -- past 2^53 ms (Lua numbers are doubles) leaves the record without one: it goes with the
  -- lock's release.
  local pt = redis.call('pttl', lock)
  if pt > 9007199254740992 or pt == -1 then redis.call('persist', rec)
  elseif pt > 0 then redis.call('pexpire', rec, string.format('%d', pt))
  else redis.call('del', rec) end
end
return {verdict, res}
