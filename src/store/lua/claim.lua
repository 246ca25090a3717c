-- Claims up to ARGV[4] users whose erasure is due and leases them until ARGV[3].
--
-- KEYS: 1 seen, 2 lease, 3 queue, 4 job, 5 feed (all of one namespace, one hash tag)
-- ARGV: 1 now (ms), 2 cutoff (ms), 3 lease deadline (ms), 4 limit
-- Returns a flat array: user, reason, marked_at, attempts, user, reason, ...
--
-- The claim/confirm protocol:
--   1. claim (this script) moves a user out of `seen` (and `queue`) into `lease`,
--      scored by the lease deadline; the deadline identifies this claim;
--   2. the pruner runs every eraser for the user;
--   3. confirm deletes the lease only if its score is still our deadline.
-- A pruner that dies between 1 and 3 leaves the lease behind; once it expires, step 1 of
-- a later pass takes the user again. Leases only move forward in time, so two claims of
-- one user never share a deadline.
--
-- A user "came back" when they interacted after being marked for erasure; for an
-- inactivity lease (marked_at 0) any `seen` entry counts, because the claim removed the
-- old one. Opt-outs are never cancelled.

local now = tonumber(ARGV[1])
local cutoff = ARGV[2]
local lease_until = ARGV[3]
local limit = tonumber(ARGV[4])
local out = {}
local n = 0

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

local function emit(user, r, m, a)
  n = n + 1
  out[#out + 1] = user
  out[#out + 1] = r
  out[#out + 1] = m
  out[#out + 1] = a
end

-- 1. Expired leases: their pruner crashed or stalled.
for _, user in ipairs(redis.call('ZRANGE', KEYS[2], '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)) do
  local r, m, a = parse(redis.call('HGET', KEYS[4], user))
  if came_back(user, r, m) then
    redis.call('ZREM', KEYS[2], user)
    redis.call('HDEL', KEYS[4], user)
  else
    redis.call('ZADD', KEYS[2], lease_until, user)
    redis.call('ZREM', KEYS[1], user)
    emit(user, r, m, a)
  end
end

-- 2. Scheduled erasures that are due: gone users, opt-outs, retries.
if n < limit then
  for _, user in ipairs(redis.call('ZRANGE', KEYS[3], '-inf', now, 'BYSCORE', 'LIMIT', 0, limit - n)) do
    redis.call('ZREM', KEYS[3], user)
    local r, m, a = parse(redis.call('HGET', KEYS[4], user))
    if came_back(user, r, m) then
      redis.call('HDEL', KEYS[4], user)
    else
      redis.call('ZADD', KEYS[2], lease_until, user)
      redis.call('ZREM', KEYS[1], user)
      emit(user, r, m, a)
    end
  end
end

-- 3. Users inactive since the cutoff, in one range, one ZREM and one ZADD.
if n < limit then
  local users = redis.call('ZRANGE', KEYS[1], '-inf', cutoff, 'BYSCORE', 'LIMIT', 0, limit - n)
  if #users > 0 then
    local queued = redis.call('ZMSCORE', KEYS[3], unpack(users))
    local leases = {}
    for i, user in ipairs(users) do
      local r, m, a = 'i', 0, 0
      if queued[i] then
        -- Scheduled but not yet due (a grace period): keep the more specific reason.
        redis.call('ZREM', KEYS[3], user)
        r, m, a = parse(redis.call('HGET', KEYS[4], user))
      end
      leases[#leases + 1] = lease_until
      leases[#leases + 1] = user
      emit(user, r, m, a)
    end
    redis.call('ZREM', KEYS[1], unpack(users))
    redis.call('ZADD', KEYS[2], unpack(leases))
  end
end

return out
