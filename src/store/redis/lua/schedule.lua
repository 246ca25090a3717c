-- Schedules an erasure: a gone mark (blocked, deactivated, unreachable) or an opt-out.
--
-- KEYS: 2 lease, 3 queue, 4 job, 5 feed, 6 batches, 8 meta
-- ARGV: 1 user, 2 reason, 3 marked_at (ms), 4 due (ms, or +inf to only mark),
--       5 feed retention (ms)
-- Returns 1 scheduled, 0 already scheduled (kept), 2 being erased right now.
-- An opt-out replaces a scheduled gone erasure; nothing replaces an opt-out.
-- (batches.lua is prepended.)

local refused = fence()
if refused then
  return refused
end
local user, reason, marked_at, due, keep = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])

if batch_of(user) then
  if reason == 'o' then
    local job = redis.call('HGET', KEYS[4], user)
    local rest = ',' .. marked_at .. ',0'
    if job then
      rest = string.sub(job, 2)
    end
    redis.call('HSET', KEYS[4], user, 'o' .. rest)
  end
  return 2
end

local job = redis.call('HGET', KEYS[4], user)
if job and redis.call('ZSCORE', KEYS[3], user) then
  if reason ~= 'o' or string.sub(job, 1, 1) == 'o' then
    return 0
  end
end

redis.call('ZADD', KEYS[3], due, user)
redis.call('HSET', KEYS[4], user, reason .. ',' .. marked_at .. ',0')
if reason ~= 'o' then
  -- Processes that skipped writing an interaction of this user after the mark (because
  -- they had written one recently) must write it now: it cancels the mark.
  local t = redis.call('TIME')
  local min_id = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - keep
  redis.call('XADD', KEYS[5], 'MINID', string.format('%d', min_id), '*',
    'u', user, 's', marked_at, 'e', marked_at, 'o', 0)
  -- See finish.lua: an id leaves the feed within two windows.
  redis.call('PEXPIRE', KEYS[5], keep)
end
return 1
