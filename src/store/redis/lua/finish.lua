-- Ends a batch: confirms users whose erasers all succeeded and requeues the others
-- (compare-and-delete: only while the batch's lease still carries our deadline).
--
-- KEYS: 1 seen, 2 lease, 3 queue, 4 job, 5 feed, 6 batches, 8 meta, 9 failing, 10 receipts, 11 erased, 12 probes
-- ARGV: 1 now (ms), 2 follow-up due (ms), 3 feed retention (ms), 4 batch id,
--       5 lease deadline, 6 number of erased users, 7 stuck after (ms), 8 report a stuck
--       erasure at most once per (ms), 9 how long receipts live (ms; 0: no receipts),
--       10 the erasers' names (a JSON array), 11 the reason each erased user was claimed
--       for (one code a user, in order), then the erased users, then (with receipts) per
--       erased user: keyed hash, reason, attempts; then per failed user: user, reason,
--       marked_at, attempts, retry at (ms)
-- Returns {-1} when the lease was lost (it expired and another pruner took the batch
-- over; that pruner finishes the job). Otherwise {k, then the k positions (1-based, among
-- the erased users) of those whose erasure got a follow-up queued, then per failed user:
-- since when their erasure has been failing (ms), and 1 if it is stuck and due to be
-- reported now (0 otherwise)}. Every other erased user is confirmed as erased.
--
-- `failing` (KEYS[9]) keeps, per user whose erasure is failing, "<first failure>,<last
-- report as stuck>" (ms); it goes when the erasure succeeds or is cancelled. Reports
-- are decided here, so that replicas sharing the store report each one once.
--
-- `receipts` (KEYS[10]) is a stream of one entry per erased user: `h` the keyed hash of
-- the id (never the id), `r` reason, `t` time (ms, the caller's clock), `e` erasers, `a`
-- attempts. Entry ids follow the caller's clock (never going back), so that trimming by
-- id drops receipts older than their lifetime.
--
-- `erased` (KEYS[11]) keeps each keyed hash's latest erasure, scored time * 8 + the
-- reason's rank (RANK; `erased_score` in decode.rs), so that the audit finds a page of
-- users' last erasures with one ZMSCORE instead of reading every receipt. `ZADD GT` keeps
-- the latest; scores below the lifetime are trimmed here, and the key expires with the
-- stream.
local RANK = { o = 0, i = 1, b = 2, d = 3, u = 4 }

local refused = fence()
if refused then
  return refused
end
local now, follow_up_at, keep, batch = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local lease = redis.call('ZSCORE', KEYS[2], batch)
if not lease or tonumber(lease) ~= tonumber(ARGV[5]) then
  return {-1}
end
-- `erasures_finished` in meta: a count of finished batches that erased someone, which
-- the audit compares around a page (`Backend::erasures_finished`).
if tonumber(ARGV[6]) > 0 then
  redis.call('HINCRBY', KEYS[8], 'erasures_finished', 1)
end

-- Lua's `unpack` fails past about 8000 values ("too many results to unpack"): long lists
-- go to Redis in chunks.
local CHUNK = 1000
local function each_chunk(list, f)
  for i = 1, #list, CHUNK do
    f(unpack(list, i, math.min(i + CHUNK - 1, #list)))
  end
end

local n = tonumber(ARGV[6])
local stuck_after, report_every = tonumber(ARGV[7]), tonumber(ARGV[8])
local receipts_keep = tonumber(ARGV[9])
-- The erased users are ARGV[12] .. ARGV[11 + n].
local claimed_for = ARGV[11]
local first_failed = 12 + n
local receipt_id
if receipts_keep > 0 then
  first_failed = 12 + 4 * n
  local ms = tonumber(ARGV[1])
  local top = redis.call('XREVRANGE', KEYS[10], '+', '-', 'COUNT', 1)
  if top[1] then
    local last = tonumber(string.match(top[1][1], '^(%d+)-'))
    if last and last > ms then
      ms = last
    end
  end
  receipt_id = string.format('%d-*', ms)
end
-- Positions of the erased users whose erasure got a follow-up.
local follow_ups = {}
-- No job at all and no receipts (a batch of users inactive alone, the usual case): no
-- erased user needs a look, only the batch ends.
local has_jobs = n > 0 and redis.call('HLEN', KEYS[4]) > 0
if has_jobs or (receipt_id and n > 0) then
  local done = { unpack(ARGV, 12, 11 + n) }
  local jobs = {}
  if has_jobs then
    each_chunk(done, function(...)
      local part = redis.call('HMGET', KEYS[4], ...)
      for j = 1, #part do
        jobs[#jobs + 1] = part[j] or false
      end
    end)
  end
  local t = redis.call('TIME')
  local min_id = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - keep
  local finished_jobs = {}
  for i, user in ipairs(done) do
    local job = jobs[i] or nil
    if receipt_id then
      local base = 9 + n + 3 * i
      local reason = ARGV[base + 1]
      if job then
        reason = string.sub(job, 1, 1)
      end
      redis.call('XADD', KEYS[10], 'MINID', string.format('%d', tonumber(now) - receipts_keep),
        receipt_id, 'h', ARGV[base], 'r', reason, 't', now, 'e', ARGV[10],
        'a', ARGV[base + 2])
      if RANK[reason] then
        redis.call('ZADD', KEYS[11], 'GT', string.format('%d', tonumber(now) * 8 + RANK[reason]),
          ARGV[base])
      end
    end
    if job then
      -- The job holds the reason; an opt-out may have taken over a running erasure.
      local reason, marked_at = string.match(job, '^(%a),(%-?%d+),')
      if reason ~= 'i' then
        -- Tell every process sharing this store to drop its cached "seen recently" for
        -- the user. For an opt-out, `s`..`e` is the erasure window: an interaction inside
        -- it was in flight while the erasers ran.
        local opt_out = 0
        if reason == 'o' then
          opt_out = 1
        end
        redis.call('XADD', KEYS[5], 'MINID', string.format('%d', min_id), '*',
          'u', user, 's', marked_at, 'e', now, 'o', opt_out)
        -- Exact trimming drops announcements older than the window at every new one; the
        -- TTL drops the last ones when no new one comes: an id leaves the feed within two
        -- windows.
        redis.call('PEXPIRE', KEYS[5], keep)
      end
      -- `follow_up` in protocol.rs: an opt-out whose user interacted while the erasers ran
      -- (the handler of that update may have written data after them), or that took over
      -- an erasure claimed for another reason (its erasers never saw the opt-out), is
      -- erased once more when the handler has finished.
      if reason == 'o' and (string.sub(claimed_for, i, i) ~= 'o'
          or redis.call('ZSCORE', KEYS[1], user)) then
        redis.call('ZADD', KEYS[3], follow_up_at, user)
        redis.call('HSET', KEYS[4], user, 'o,' .. now .. ',0')
        follow_ups[#follow_ups + 1] = i
      else
        finished_jobs[#finished_jobs + 1] = user
      end
    end
  end
  each_chunk(finished_jobs, function(...)
    redis.call('HDEL', KEYS[4], ...)
  end)
end
if n > 0 and redis.call('HLEN', KEYS[9]) > 0 then
  for i = 12, 11 + n, CHUNK do
    redis.call('HDEL', KEYS[9], unpack(ARGV, i, math.min(i + CHUNK - 1, 11 + n)))
  end
end
-- What the census kept about the erased users goes with them (no key keeps their id).
if n > 0 and redis.call('EXISTS', KEYS[12]) == 1 then
  for i = 12, 11 + n, CHUNK do
    redis.call('HDEL', KEYS[12], unpack(ARGV, i, math.min(i + CHUNK - 1, 11 + n)))
  end
end
local res = { #follow_ups }
for _, i in ipairs(follow_ups) do
  res[#res + 1] = i
end

if receipt_id and n > 0 then
  -- The whole stream goes once its newest receipt has lived its time; so does the index.
  redis.call('PEXPIRE', KEYS[10], receipts_keep)
  redis.call('ZREMRANGEBYSCORE', KEYS[11], '-inf',
    string.format('(%d', (tonumber(now) - receipts_keep) * 8))
  redis.call('PEXPIRE', KEYS[11], receipts_keep)
end

local now_ms = tonumber(now)
for i = first_failed, #ARGV, 5 do
  local user, reason, marked_at, attempts, retry_at = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local job = redis.call('HGET', KEYS[4], user)
  if job then
    -- Keep an upgrade to opt-out that happened while the erasers ran.
    reason = string.sub(job, 1, 1)
  end
  redis.call('ZADD', KEYS[3], retry_at, user)
  redis.call('HSET', KEYS[4], user, reason .. ',' .. marked_at .. ',' .. attempts)
  local since, reported = now_ms, 0
  local failing = redis.call('HGET', KEYS[9], user)
  if failing then
    local s, r = string.match(failing, '^(%d+),(%d+)$')
    if s then
      since, reported = tonumber(s), tonumber(r)
    end
  end
  local stuck = 0
  if now_ms - since >= stuck_after and now_ms - reported >= report_every then
    stuck, reported = 1, now_ms
  end
  redis.call('HSET', KEYS[9], user, string.format('%d,%d', since, reported))
  res[#res + 1] = string.format('%d', since)
  res[#res + 1] = stuck
end

redis.call('HDEL', KEYS[6], batch)
redis.call('ZREM', KEYS[2], batch)
return res
