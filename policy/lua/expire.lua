local v = redis.pcall('get', KEYS[1])
if type(v) == 'table' and v.err then return v end
if v ~= ARGV[1] then return 0 end
return redis.pcall(ARGV[2], KEYS[1], unpack(ARGV, 3))
