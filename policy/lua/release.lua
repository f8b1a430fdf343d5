#!lua flags=allow-oom
-- lockproxy: DEL/UNLINK of lock keys, checked against their lease records, in one step.
-- The shebang makes Redis judge the script as it judges DEL: a write (-READONLY on a
-- read-only replica, -MASTERDOWN on a stale one, -NOREPLICAS) that runs under maxmemory.
-- KEYS: per key of the command, in order: the key; a lock key is followed by its lease record
-- and its history.
-- ARGV[1] 'del' or 'unlink'; ARGV[2] the requester's owner identity; then per key: 'o' for an
-- ordinary key, or for a lock key three: the mode ('r' checked release, 'a' audit: delete
-- as asked and say what a checked release would have done, 'x' exempt: the same), the
-- requester's acquire id on this connection ('' when none) and its token's SHA-1. The lock is
-- the requester's own when the record holds that acquire id, or, with no record at all (the
-- holder kept it alive by other means than the proxy), when it still holds that token. An id
-- ending in ':' is a prefix (the proxy's cache forgot this connection's id): any acquire id
-- starting with it is the connection's; there is no token then.
-- Returns one integer per key: an ordinary key, how many were deleted; a lock key,
-- verdict * 10 + deleted, the verdict being 0 the requester's own lease, 1 another owner's,
-- 2 late (the requester's lease ended by its TTL, the lock is someone else's now), 3 no record
-- (taken outside lockproxy), 4 no such key.
-- Called with no keys (EVAL of the body queued in MULTI before the EVALSHAs that need it,
-- so that they find it loaded): nothing to do.
if #KEYS == 0 then return 0 end
local function mine(id, myid, pre)
  if not id then return false end
  if pre then return string.sub(id, 1, #myid) == myid end
  return id == myid
end
local function late(hist, myid, pre)
  local h = redis.call('hmget', hist, 'a', 'r', 'e')
  if not pre and h[1] == myid and h[2] ~= myid then return true end
  for id in string.gmatch(h[3] or '', '%S+') do
    if mine(id, myid, pre) then return true end
  end
  return false
end
local out, k, a = {}, 1, 3
while a <= #ARGV do
  if ARGV[a] == 'o' then
    out[#out + 1] = redis.call(ARGV[1], KEYS[k])
    k, a = k + 1, a + 1
  else
    local lock, rec, hist = KEYS[k], KEYS[k + 1], KEYS[k + 2]
    local mode, myid, mytok = ARGV[a], ARGV[a + 1], ARGV[a + 2]
    local pre = string.sub(myid, -1) == ':'
    k, a = k + 3, a + 3
    local v = redis.pcall('get', lock)
    local verdict, r
    if v == false then
      verdict = 4
    elseif type(v) ~= 'string' then
      verdict = 3
    else
      r = redis.call('hmget', rec, 'owner', 'id', 'token_sha1')
      if myid ~= '' and (mine(r[2], myid, pre) or (not r[1] and not pre and redis.sha1hex(v) == mytok)) then
        verdict = 0
      elseif myid ~= '' and late(hist, myid, pre) then
        verdict = 2
      elseif not r[1] or r[3] ~= redis.sha1hex(v) then
        verdict = 3
      elseif r[1] == ARGV[2] then
        verdict = 0
      else
        verdict = 1
      end
    end
    local del = 0
    if verdict ~= 4 and (mode ~= 'r' or verdict == 0 or verdict == 3) then
      del = redis.call(ARGV[1], lock)
      if r and r[2] then
        redis.call('del', rec)
        redis.call('hset', hist, 'r', r[2])
      end
    end
    out[#out + 1] = verdict * 10 + del
  end
end
return out
