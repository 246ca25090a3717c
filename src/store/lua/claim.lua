-- Claims up to ARGV[4] users whose erasure is due into one batch, leased until ARGV[3].
--
-- KEYS: 1 seen, 2 lease, 3 queue, 4 job, 5 feed, 6 batches
-- ARGV: 1 now (ms), 2 cutoff (ms), 3 lease deadline (ms), 4 limit, 5 batch id
-- Returns {plain, special}: plain = ids of users claimed for inactivity alone;
-- special = user, reason, marked_at, attempts for users with a scheduled job.
--
-- The claim -> erase -> finish protocol:
--   1. claim (this script) moves users out of `seen` (and `queue`) into a batch (listed
--      in `batches`), and scores the batch in `lease` by its deadline;
--   2. the pruner runs every eraser for the batch's users;
--   3. finish ends the batch only if its lease still carries that deadline, requeueing
--      users whose erasers failed.
-- A pruner that dies between 1 and 3 leaves its batch behind; once the lease expires,
-- step 1 of a later claim takes its users over. Leasing whole batches keeps a claim to
-- one sorted-set write and one hash field, however many users it holds.
--
-- A user "came back" when they interacted after being marked for erasure; for a claim
-- for inactivity (marked_at 0) any `seen` entry counts, because the claim removed the old
-- one. Opt-outs are never cancelled.

local now = tonumber(ARGV[1])
local cutoff = ARGV[2]
local deadline = ARGV[3]
local limit = tonumber(ARGV[4])
local batch = ARGV[5]
local members = {}
local plain = {}
local special = {}

local function parse(job)
  if not job then
    return 'i', 0, 0
  end
  local r, m, a = string.match(job, '^(%a),(%-?%d+),(%d+)$')
  return r, tonumber(m), tonumber(a)
end

local function came_back(user, reason, marked_at)
  if reason == 'o' then
    return false
  end
  local s = redis.call('ZSCORE', KEYS[1], user)
  if not s then
    return false
  end
  return marked_at == 0 or tonumber(s) > marked_at
end

local function take(user, r, m, a)
  members[#members + 1] = user
  if r == 'i' and m == 0 and a == 0 then
    plain[#plain + 1] = user
  else
    special[#special + 1] = user
    special[#special + 1] = r
    special[#special + 1] = m
    special[#special + 1] = a
  end
end

-- Takes a user with a job (or a lease of a dead pruner) unless they came back.
local function take_or_drop(user)
  local r, m, a = parse(redis.call('HGET', KEYS[4], user))
  if came_back(user, r, m) then
    redis.call('HDEL', KEYS[4], user)
  else
    redis.call('ZREM', KEYS[1], user)
    take(user, r, m, a)
  end
end

-- 1. Batches whose lease expired: their pruner crashed or stalled. The limit counts users,
-- not batches: what does not fit stays in the old batch, still expired, for the next claim
-- (two crashed batches merged into one above the limit could never be finished).
local expired = redis.call('ZRANGE', KEYS[2], '-inf', now, 'BYSCORE', 'LIMIT', 0, 16, 'WITHSCORES')
for e = 1, #expired, 2 do
  local old, old_deadline = expired[e], tonumber(expired[e + 1])
  if #members >= limit then
    break
  end
  local left = {}
  for user in string.gmatch(redis.call('HGET', KEYS[6], old) or '', '%d+') do
    if #members < limit then
      take_or_drop(user)
    else
      left[#left + 1] = user
    end
  end
  if #left > 0 then
    redis.call('HSET', KEYS[6], old, ',' .. table.concat(left, ',') .. ',')
    -- A new deadline, still expired: the batch's own pruner, if it only stalled, must
    -- find its lease lost at finish (compare-and-delete), as after a full takeover.
    local moved = now
    if old_deadline == now then
      moved = now - 1
    end
    redis.call('ZADD', KEYS[2], moved, old)
  else
    redis.call('HDEL', KEYS[6], old)
    redis.call('ZREM', KEYS[2], old)
  end
end

-- 2. Scheduled erasures that are due: gone users, opt-outs, retries.
if #members < limit then
  for _, user in ipairs(redis.call('ZRANGE', KEYS[3], '-inf', now, 'BYSCORE', 'LIMIT', 0, limit - #members)) do
    redis.call('ZREM', KEYS[3], user)
    take_or_drop(user)
  end
end

-- 3. Users inactive since the cutoff: the lowest ranks of `seen`, removed by rank.
if #members < limit then
  local users = redis.call('ZRANGE', KEYS[1], '-inf', cutoff, 'BYSCORE', 'LIMIT', 0, limit - #members)
  if #users > 0 then
    local queued = redis.call('ZMSCORE', KEYS[3], unpack(users))
    for i, user in ipairs(users) do
      if queued[i] then
        -- Scheduled but not yet due (a grace period): keep the more specific reason.
        redis.call('ZREM', KEYS[3], user)
        take(user, parse(redis.call('HGET', KEYS[4], user)))
      else
        take(user, 'i', 0, 0)
      end
    end
    redis.call('ZREMRANGEBYRANK', KEYS[1], 0, #users - 1)
  end
end

if #members > 0 then
  redis.call('HSET', KEYS[6], batch, ',' .. table.concat(members, ',') .. ',')
  redis.call('ZADD', KEYS[2], deadline, batch)
end
return {plain, special}
