-- Claims one user for an immediate erasure (an opt-out).
--
-- KEYS: 1 seen, 2 lease, 3 queue, 4 job, 5 feed
-- ARGV: 1 user, 2 reason, 3 now (ms), 4 lease deadline (ms)
-- Returns {1, attempts} when claimed. Returns {0} when a live lease of another erasure
-- holds the user; that erasure's job is upgraded to this reason, so that if it fails it is
-- retried as this reason.

local user, reason, now, lease_until = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local job = redis.call('HGET', KEYS[4], user)
local attempts = 0
if job then
  attempts = tonumber(string.match(job, ',(%d+)$')) or 0
end
redis.call('HSET', KEYS[4], user, reason .. ',' .. now .. ',' .. attempts)

local lease = redis.call('ZSCORE', KEYS[2], user)
if lease and tonumber(lease) > tonumber(now) then
  return {0}
end

redis.call('ZREM', KEYS[3], user)
redis.call('ZREM', KEYS[1], user)
redis.call('ZADD', KEYS[2], lease_until, user)
return {1, attempts}
