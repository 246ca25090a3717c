-- Adopts users the bot held before it tracked them: each gets a `seen` time, never moved
-- back (a tracked user keeps the later of the two), unless an erasure of theirs is
-- scheduled or running (left as it is: adoption never resurrects an opted-out user), and
-- never later than Redis's clock.
--
-- KEYS: 1 seen, 2 lease, 4 job, 6 batches, 8 meta
-- ARGV: 1 'now' to cap every time at Redis's clock, or '' when the caller's clock decides
--       (it capped them itself); then ms, user, ms, user, ... (at most INTERACTION_CHUNK
--       pairs; canonical ids); an `ms` written `n<ms>` applies only to a user not tracked
--       yet (the bot knew no time: a tracked user keeps theirs, so adopting again never
--       restarts a clock)
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
-- Every read first, then the writes (all or nothing, as every script). The chunk's jobs
-- and times are read with one HMGET and one ZMSCORE, not a call per user. A user listed
-- twice in one call meets the time planned for them, as if it were written.
local users = {}
for i = 3, #ARGV, 2 do
  users[#users + 1] = ARGV[i]
end
local jobs, scores = {}, {}
if #users > 0 then
  jobs = redis.call('HMGET', KEYS[4], unpack(users))
  scores = redis.call('ZMSCORE', KEYS[1], unpack(users))
end
local now = math.huge
if ARGV[1] ~= '' then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local writes, planned = {}, {}
for i = 2, #ARGV, 2 do
  local raw, user = ARGV[i], ARGV[i + 1]
  local k = i / 2
  local if_new = string.sub(raw, 1, 1) == 'n'
  local ms = math.min(tonumber(if_new and string.sub(raw, 2) or raw), now)
  if running[user] or jobs[k] then
    erasing = erasing + 1
  else
    local old = planned[user] or scores[k]
    if not old then
      new = new + 1
      planned[user] = ms
      writes[#writes + 1] = ms
      writes[#writes + 1] = user
    elseif tonumber(old) < ms and not if_new then
      moved = moved + 1
      planned[user] = ms
      writes[#writes + 1] = ms
      writes[#writes + 1] = user
    else
      kept = kept + 1
    end
  end
end
if #writes > 0 then
  -- GT: a new user is added, a tracked one only moves forward.
  redis.call('ZADD', KEYS[1], 'GT', unpack(writes))
end
return {new, moved, kept, erasing}
