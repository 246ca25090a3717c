-- Claims one user for an immediate erasure (an opt-out), as a batch of one.
--
-- KEYS: 1 seen, 2 lease, 3 queue, 4 job, 6 batches, 8 meta
-- ARGV: 1 user, 2 reason, 3 now (ms), or '' for Redis's own clock, 4 lease (ms),
--       5 batch id
-- Returns {1, attempts, now, deadline} when claimed. Returns {0} when a live batch of
-- another erasure holds the user; that erasure's job is upgraded to this reason, so that
-- if it fails it is retried as this reason. (writers.lua and batches.lua are prepended.)

local refused = fence()
if refused then
  return refused
end
local user, reason, batch = ARGV[1], ARGV[2], ARGV[5]
local now = now_or_redis(ARGV[3])
local deadline = now + tonumber(ARGV[4])
local job = redis.call('HGET', KEYS[4], user)
local attempts = 0
if job then
  attempts = tonumber(string.match(job, ',(%d+)$')) or 0
end
redis.call('HSET', KEYS[4], user, string.format('%s,%d,%d', reason, now, attempts))

local held_by, until_ = batch_of(user)
if held_by then
  if until_ > now then
    return {0}
  end
  -- The batch's pruner died: take the user out of it.
  local members = string.gsub(redis.call('HGET', KEYS[6], held_by), ',' .. user .. ',', ',', 1)
  redis.call('HSET', KEYS[6], held_by, members)
end

redis.call('ZREM', KEYS[3], user)
redis.call('ZREM', KEYS[1], user)
redis.call('HSET', KEYS[6], batch, ',' .. user .. ',')
redis.call('ZADD', KEYS[2], string.format('%d', deadline), batch)
return {1, attempts, string.format('%d', now), string.format('%d', deadline)}
