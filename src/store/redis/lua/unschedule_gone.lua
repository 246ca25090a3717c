-- Cancels a scheduled gone erasure (the user unblocked the bot, or a probe found them
-- reachable), or postpones it (a probe could not tell). Opt-outs, retries of inactivity
-- erasures and running erasures stay.
--
-- KEYS: 3 queue, 4 job, 8 meta, 9 failing
-- ARGV: per request (at most a few hundred a call): user, only this job
--       ("<reason>,<marked_at>,<attempts>"; empty: any gone mark), postpone to (ms;
--       empty: cancel)
-- Returns per request 1 if the erasure was cancelled or postponed, else 0.

local refused = fence()
if refused then
  return refused
end
local function unschedule(user, only, later)
  local job = redis.call('HGET', KEYS[4], user)
  if not job then
    return 0
  end
  local r = string.sub(job, 1, 1)
  if r == 'o' or r == 'i' then
    return 0
  end
  if only ~= '' then
    -- The same mark: reason, time and attempts, compared as numbers.
    local want_r, want_at, want_n = string.match(only, '^(%a),(%-?%d+),(%d+)$')
    local have_r, have_at, have_n = string.match(job, '^(%a),(%-?%d+),(%d+)$')
    if not have_r or have_r ~= want_r or tonumber(have_at) ~= tonumber(want_at)
        or tonumber(have_n) ~= tonumber(want_n) then
      return 0
    end
  end
  if later ~= '' then
    -- Only while it waits in the queue: a running erasure is the pruner's.
    if not redis.call('ZSCORE', KEYS[3], user) then
      return 0
    end
    -- Later only: a postponement never brings a mark forward (nor makes a mark-only one,
    -- due never, due).
    redis.call('ZADD', KEYS[3], 'GT', later, user)
    return 1
  end
  if redis.call('ZREM', KEYS[3], user) == 1 then
    redis.call('HDEL', KEYS[4], user)
    redis.call('HDEL', KEYS[9], user)
    return 1
  end
  return 0
end

local out = {}
for i = 1, #ARGV, 3 do
  out[#out + 1] = unschedule(ARGV[i], ARGV[i + 1], ARGV[i + 2])
end
return out
