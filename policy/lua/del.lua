local r = {}
for i, k in ipairs(KEYS) do
  local m = ARGV[i + 1]
  local t = string.sub(m, 1, 1)
  if t == 'o' then
    r[i] = redis.call(ARGV[1], k)
  elseif t == 'a' then
    local verdict = 0
    if #m > 1 then
      local v = redis.pcall('get', k)
      if type(v) == 'string' and v ~= string.sub(m, 2) then verdict = 1 end
    else
      local ttl = redis.call('pttl', k)
      if ttl == -1 then verdict = 2 elseif ttl >= 0 then verdict = 1 end
    end
    r[i] = redis.call(ARGV[1], k) + 10 * verdict
  elseif t == 'f' then
    local ttl = redis.call('pttl', k)
    if ttl == -1 then r[i] = redis.call(ARGV[1], k) elseif ttl == -2 then r[i] = -1 else r[i] = 0 end
  else
    local v = redis.pcall('get', k)
    if type(v) == 'table' and v.err then return v end
    if v == false then r[i] = -1
    elseif v == string.sub(m, 2) then r[i] = redis.call(ARGV[1], k)
    else r[i] = 0 end
  end
end
return r
