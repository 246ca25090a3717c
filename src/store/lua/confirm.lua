-- Ends the leases of users whose erasers all succeeded (compare-and-delete).
--
-- KEYS: 1 seen, 2 lease, 3 queue, 4 job, 5 feed
-- ARGV: 1 now (ms), 2 follow-up due (ms), 3 feed retention (ms),
--       then per user: user, lease deadline, reason, marked_at
-- Returns one integer per user: 1 erased, 2 erased and a follow-up queued, 0 lease lost
-- (it expired and another pruner holds it now; that pruner finishes the job).

local now, follow_up_at, keep = ARGV[1], ARGV[2], tonumber(ARGV[3])
local t = redis.call('TIME')
local min_id = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - keep
local res = {}
local done = {}
local done_jobs = {}

for i = 4, #ARGV, 4 do
  local user, deadline, reason, marked_at = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  local s = redis.call('ZSCORE', KEYS[2], user)
  if s and tonumber(s) == tonumber(deadline) then
    done[#done + 1] = user
    -- A running erasure may have been upgraded to an opt-out meanwhile.
    local job = redis.call('HGET', KEYS[4], user)
    if job then
      reason = string.sub(job, 1, 1)
    end
    local outcome = 1
    if reason ~= 'i' then
      -- Tell every process sharing this store to drop its cached "seen recently" for the
      -- user. For an opt-out, `s`..`e` is the erasure window: an interaction inside it
      -- was in flight while the erasers ran.
      local since = marked_at
      local opt_out = 0
      if reason == 'o' then
        opt_out = 1
      end
      redis.call('XADD', KEYS[5], 'MINID', '~', string.format('%d', min_id), '*',
        'u', user, 's', since, 'e', now, 'o', opt_out)
    end
    if reason == 'o' and redis.call('ZSCORE', KEYS[1], user) then
      -- Touched while the erasers ran: the handler of that update may have written data
      -- after them. Erase once more when it has finished.
      redis.call('ZADD', KEYS[3], follow_up_at, user)
      redis.call('HSET', KEYS[4], user, 'o,' .. now .. ',0')
      outcome = 2
    elseif job then
      done_jobs[#done_jobs + 1] = user
    end
    res[#res + 1] = outcome
  else
    res[#res + 1] = 0
  end
end

if #done > 0 then
  redis.call('ZREM', KEYS[2], unpack(done))
end
if #done_jobs > 0 then
  redis.call('HDEL', KEYS[4], unpack(done_jobs))
end
return res
