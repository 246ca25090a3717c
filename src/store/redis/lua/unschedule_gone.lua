-- Cancels a scheduled gone erasure (the user unblocked the bot). Opt-outs and retries of
-- inactivity erasures stay.
--
-- KEYS: 3 queue, 4 job, 8 meta, 9 failing
-- ARGV: 1 user
-- Returns 1 if an erasure was cancelled.

local refused = fence()
if refused then
  return refused
end
local user = ARGV[1]
local job = redis.call('HGET', KEYS[4], user)
if not job then
  return 0
end
local r = string.sub(job, 1, 1)
if r == 'o' or r == 'i' then
  return 0
end
if redis.call('ZREM', KEYS[3], user) == 1 then
  redis.call('HDEL', KEYS[4], user)
  redis.call('HDEL', KEYS[9], user)
  return 1
end
return 0
