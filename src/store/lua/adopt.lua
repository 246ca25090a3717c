-- Adopts users the bot held before it tracked them: each gets a `seen` time, never moved
-- back (a tracked user keeps the later of the two), unless an erasure of theirs is
-- scheduled or running (left as it is: adoption never resurrects an opted-out user).
--
-- KEYS: 1 seen, 2 lease, 4 job, 6 batches, 8 meta
-- ARGV: ms, user, ms, user, ... (at most TOUCH_CHUNK pairs; canonical ids); an `ms`
--       written `n<ms>` applies only to a user not tracked yet (the bot knew no time: a
--       tracked user keeps theirs, so adopting again never restarts a clock)
-- Returns {newly tracked, moved forward, kept, left because an erasure is scheduled or
-- running}; a `LAYOUT` error if these keys' layout is no longer read (fence.lua and
-- batches.lua are prepended).

local refused = fence()
if refused then
  return refused
end
local new, moved, kept, erasing = 0, 0, 0, 0
local running = {}
local batches = redis.call('ZRANGE', KEYS[2], 0, -1)
for _, batch in ipairs(batches) do
  for user in string.gmatch(redis.call('HGET', KEYS[6], batch) or '', '[^,]+') do
    running[user] = true
  end
end
for i = 1, #ARGV, 2 do
  local raw, user = ARGV[i], ARGV[i + 1]
  local if_new = string.sub(raw, 1, 1) == 'n'
  local ms = tonumber(if_new and string.sub(raw, 2) or raw)
  if running[user] or redis.call('HEXISTS', KEYS[4], user) == 1 then
    erasing = erasing + 1
  else
    local old = redis.call('ZSCORE', KEYS[1], user)
    if not old then
      new = new + 1
      redis.call('ZADD', KEYS[1], ms, user)
    elseif tonumber(old) < ms and not if_new then
      moved = moved + 1
      redis.call('ZADD', KEYS[1], 'GT', ms, user)
    else
      kept = kept + 1
    end
  end
end
return {new, moved, kept, erasing}
