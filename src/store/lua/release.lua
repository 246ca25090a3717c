-- Gives users whose erasure failed back to the queue, to be retried.
--
-- KEYS: 1 seen, 2 lease, 3 queue, 4 job, 5 feed
-- ARGV: per user: user, lease deadline, reason, marked_at, attempts, retry at (ms)
-- Returns the number of users released (a lease that was lost is left to its new owner).

local released = 0
for i = 1, #ARGV, 6 do
  local user, deadline = ARGV[i], ARGV[i + 1]
  local reason, marked_at, attempts, retry_at = ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local s = redis.call('ZSCORE', KEYS[2], user)
  if s and tonumber(s) == tonumber(deadline) then
    local job = redis.call('HGET', KEYS[4], user)
    if job then
      -- Keep an upgrade to opt-out that happened while the erasers ran.
      reason = string.sub(job, 1, 1)
    end
    redis.call('ZREM', KEYS[2], user)
    redis.call('ZADD', KEYS[3], retry_at, user)
    redis.call('HSET', KEYS[4], user, reason .. ',' .. marked_at .. ',' .. attempts)
    released = released + 1
  end
end
return released
