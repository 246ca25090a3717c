-- Takes or renews the census's lease (KEYS[13]) for one holder: one replica probes at a
-- time.
--
-- KEYS: 13 census
-- ARGV: 1 holder, 2 lease (ms)
-- Returns 1 if the caller holds the lease now.

local holder = redis.call('GET', KEYS[13])
if holder and holder ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[13], ARGV[1], 'PX', ARGV[2])
return 1
