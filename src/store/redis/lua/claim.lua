-- Claims up to ARGV[4] users whose erasure is due into one batch.
--
-- KEYS: 1 seen, 2 lease, 3 queue, 4 job, 6 batches, 7 writers, 8 meta, 9 failing
-- ARGV: 1 now (ms), or '' for Redis's own clock, 2 inactive after (ms), 3 lease (ms),
--       4 limit, 5 batch id, 6 a writer is silent after (ms), 7 dead after (ms)
-- Returns {plain, special, deadline, hold, unreadable, returned}: plain = ids of users
-- claimed for inactivity alone; special = user, reason, marked_at, attempts for users with a
-- scheduled job; deadline = the lease deadline; hold = why inactive users were not claimed
-- ('' if they were); unreadable = values left in place because this version cannot read
-- them; returned = users whose gone mark was dropped because they came back.
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
-- Time: "now", the cutoff and the deadline come from Redis's clock, so that a pruner host
-- whose clock runs fast neither erases early nor takes over live leases.
--
-- All or nothing: the script reads and checks everything first and writes only at the
-- end. A value it cannot read (a job or member written by another version) is left where
-- it is and reported, never dropped. (Redis does not roll back a script that fails
-- halfway; the shebang's flags make Redis refuse it up front under memory pressure.)
--
-- A user "came back" when they interacted after being marked for erasure; for a claim
-- for inactivity (marked_at 0) any `seen` entry counts, because the claim removed the old
-- one. Opt-outs are never cancelled. (writers.lua, batches.lua, ids.lua and notices.lua are
-- prepended.)
--
-- A running notice (notices.lua) holds users last seen at or before its seen_by: step 3
-- reads `seen` above that score only.
--
-- Only canonical ids are users (ids.lua): anything else in `seen`, the queue or a batch is
-- reported in `unreadable` and left in place. Step 3 reads on past such members (up to
-- MAX_EXAMINED of them), so that they never hide the due users behind them.

local refused = fence()
if refused then
  return refused
end
local now = now_or_redis(ARGV[1])
local cutoff = now - tonumber(ARGV[2])
local deadline = now + tonumber(ARGV[3])
local limit = tonumber(ARGV[4])
local batch = ARGV[5]
local hold, dead = writers_hold(tonumber(ARGV[6]), tonumber(ARGV[7]))

local members, plain, special, unreadable = {}, {}, {}, {}
-- The writes, made once everything has been read.
local rem_seen, rem_queue, drop_jobs, old_batches = {}, {}, {}, {}
-- Users steps 1 and 2 took or left in place (the writes that would hide them from step 3
-- come last), and users whose erasure they dropped because they came back (step 3 may
-- still find them inactive).
local handled, n_handled, dropped, returned = {}, 0, {}, {}

local function fmt(ms)
  return string.format('%d', ms)
end

-- reason, marked_at, attempts; nil when the job cannot be read.
local function parse(job)
  if not job then
    return 'i', 0, 0
  end
  local r, m, a = string.match(job, '^(%a),(%-?%d+),(%d+)$')
  if not r or not REASONS[r] then
    return nil
  end
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

-- Plans taking a user with a job (or of a dead pruner's batch) unless they came back.
-- Returns 'left' if their job cannot be read (left in place, reported); 'held' for an
-- erasure for inactivity from the queue while a writer may hold unwritten interactions
-- (the user's return may be among them; `may_hold`: a dead pruner's batch was decided
-- when nothing held, and its takeover finishes it); 'done' once taken or dropped.
-- `take_or_drop` in protocol.rs.
local function take_or_drop(user, may_hold)
  n_handled = n_handled + 1
  local job = redis.call('HGET', KEYS[4], user)
  local r, m, a = parse(job)
  if not r or not is_user(user) then
    handled[user] = true
    unreadable[#unreadable + 1] = 'user ' .. user .. ' job ' .. tostring(job)
    return 'left'
  end
  if came_back(user, r, m) then
    dropped[user] = true
    drop_jobs[#drop_jobs + 1] = user
    if r ~= 'i' then
      returned[#returned + 1] = user
    end
  elseif may_hold and hold and r == 'i' then
    handled[user] = true
    return 'held'
  else
    handled[user] = true
    rem_seen[#rem_seen + 1] = user
    take(user, r, m, a)
  end
  return 'done'
end

-- 1. Batches whose lease expired: their pruner crashed or stalled. The limit counts users,
-- not batches: what does not fit stays in the old batch, still expired, for the next claim
-- (two crashed batches merged into one above the limit could never be finished).
local expired = redis.call('ZRANGE', KEYS[2], '-inf', fmt(now), 'BYSCORE', 'LIMIT', 0, 16, 'WITHSCORES')
for e = 1, #expired, 2 do
  local old, old_deadline = expired[e], tonumber(expired[e + 1])
  if #members >= limit then
    break
  end
  local left = {}
  for user in string.gmatch(redis.call('HGET', KEYS[6], old) or '', '[^,]+') do
    if #members >= limit or take_or_drop(user, false) == 'left' then
      left[#left + 1] = user
    end
  end
  -- A batch left with users gets a new deadline, still expired: the batch's own pruner, if
  -- it only stalled, must find its lease lost at finish (compare-and-delete), as after a
  -- full takeover. (Unreadable users stay there and are reported at every claim.)
  local moved = now
  if old_deadline == now then
    moved = now - 1
  end
  old_batches[#old_batches + 1] = { old, left, moved }
end

-- 2. Scheduled erasures that are due: gone users, opt-outs, retries, residue. Unreadable
-- entries stay queued; a few more are read so that they cannot starve the rest. While
-- writers hold, an erasure for inactivity is postponed by one silent window (`postponed`
-- in protocol.rs), so that the queue's head moves on to gone users and opt-outs.
local postpone = {}
if #members < limit then
  local due = redis.call('ZRANGE', KEYS[3], '-inf', fmt(now), 'BYSCORE', 'LIMIT', 0, limit - #members + 64)
  for _, user in ipairs(due) do
    if #members >= limit then
      break
    end
    local outcome = take_or_drop(user, true)
    if outcome == 'done' then
      rem_queue[#rem_queue + 1] = user
    elseif outcome == 'held' then
      postpone[#postpone + 1] = user
    end
  end
end

-- 3. Users inactive since the cutoff, lowest scores first; not while a writer may hold
-- interactions it has not written. Read page by page: members that are not users (left in
-- place, reported) must not hide the due users after them.
local MAX_EXAMINED = 16384
local MAX_REPORTED = 100
local not_users = 0
-- The users of step 3 taken as a run from the first rank it reads (`base`: 0, or the
-- first above a notice's hold): while nothing in that run is skipped, they leave `seen`
-- in one ZREMRANGEBYRANK, not one ZREM each. `prefix` stays true only while every member
-- read so far was taken into the run.
local prefix, run, base = true, 0, 0
local low = '-inf'
local noticed = held_through(now)
if noticed then
  low = '(' .. fmt(noticed)
end
if #members < limit and not hold and (not noticed or noticed < cutoff) then
  if noticed then
    base = redis.call('ZCOUNT', KEYS[1], '-inf', fmt(noticed))
  end
  local page = limit - #members + 16 + n_handled
  local offset = 0
  -- Nothing scheduled at all (the usual case of a pass over inactive users): no member
  -- needs its queue entry looked up.
  local any_queued = redis.call('ZCARD', KEYS[3]) > 0
  -- Steps 1 and 2 took or left nobody (the usual case): no member needs looking up.
  local any_handled = n_handled > 0
  repeat
    local users = redis.call('ZRANGE', KEYS[1], low, fmt(cutoff), 'BYSCORE', 'LIMIT', offset, page)
    offset = offset + #users
    local queued = {}
    if any_queued then
      for i = 1, #users, 1000 do
        local part = redis.call('ZMSCORE', KEYS[3], unpack(users, i, math.min(i + 999, #users)))
        for j = 1, #part do
          queued[#queued + 1] = part[j]
        end
      end
    end
    for i, user in ipairs(users) do
      if #members >= limit then
        break
      end
      if any_handled and handled[user] then
        -- Taken or left in place above.
        prefix = false
      elseif not is_user(user) then
        prefix = false
        not_users = not_users + 1
        if not_users <= MAX_REPORTED then
          unreadable[#unreadable + 1] = 'seen member ' .. user
        end
      elseif any_handled and dropped[user] then
        -- Came back after a mark, and inactive since: its job and queue entry are dropped.
        prefix = false
        rem_seen[#rem_seen + 1] = user
        take(user, 'i', 0, 0)
      elseif queued[i] then
        -- Scheduled but not yet due (a grace period): keep the more specific reason.
        prefix = false
        local job = redis.call('HGET', KEYS[4], user)
        local r, m, a = parse(job)
        if r then
          rem_queue[#rem_queue + 1] = user
          rem_seen[#rem_seen + 1] = user
          take(user, r, m, a)
        else
          unreadable[#unreadable + 1] = 'user ' .. user .. ' job ' .. tostring(job)
        end
      elseif prefix then
        run = run + 1
        members[#members + 1] = user
        plain[#plain + 1] = user
      else
        rem_seen[#rem_seen + 1] = user
        take(user, 'i', 0, 0)
      end
    end
  until #members >= limit or #users < page or offset >= MAX_EXAMINED
end
if not_users > MAX_REPORTED then
  unreadable[#unreadable + 1] = (not_users - MAX_REPORTED) .. ' more seen members that are not users'
end

-- Every read is done: write.
local function each_chunk(list, f)
  for i = 1, #list, 1000 do
    f(unpack(list, i, math.min(i + 999, #list)))
  end
end
each_chunk(drop_jobs, function(...) redis.call('HDEL', KEYS[4], ...) end)
each_chunk(drop_jobs, function(...) redis.call('HDEL', KEYS[9], ...) end)
-- The run first: its ranks are those read, before any other removal moves them.
if run > 0 then
  redis.call('ZREMRANGEBYRANK', KEYS[1], base, base + run - 1)
end
each_chunk(rem_seen, function(...) redis.call('ZREM', KEYS[1], ...) end)
each_chunk(rem_queue, function(...) redis.call('ZREM', KEYS[3], ...) end)
if #postpone > 0 then
  local later = fmt(now + math.max(tonumber(ARGV[6]), 1))
  for _, user in ipairs(postpone) do
    redis.call('ZADD', KEYS[3], later, user)
  end
end
for _, b in ipairs(old_batches) do
  local old, left, moved = b[1], b[2], b[3]
  if #left > 0 then
    redis.call('HSET', KEYS[6], old, ',' .. table.concat(left, ',') .. ',')
    redis.call('ZADD', KEYS[2], fmt(moved), old)
  else
    redis.call('HDEL', KEYS[6], old)
    redis.call('ZREM', KEYS[2], old)
  end
end
if #members > 0 then
  redis.call('HSET', KEYS[6], batch, ',' .. table.concat(members, ',') .. ',')
  redis.call('ZADD', KEYS[2], fmt(deadline), batch)
end
if #dead > 0 then
  redis.call('HDEL', KEYS[7], unpack(dead))
end
return {plain, special, fmt(deadline), hold or '', unreadable, returned}
