-- Read-only: what a claim with the same times would take: "now" and the cutoff are found
-- as claim.lua finds them (Redis's clock unless the caller gives one), so that the dry run
-- and the pass agree whatever the caller's clock says.
--
-- KEYS: 1 seen, 2 lease, 3 queue, 4 job, 8 meta
-- ARGV: 1 now (ms), or '' for Redis's own clock, 2 inactive after (ms), 3 limit of listed
--       users
-- Returns {inactive_total, due_total, expired_leases, user, reason, marked_at, last_seen,
-- from the due queue (1, or 0: inactive), failed attempts, ...} with last_seen '' when the
-- user has no entry. Scheduled users who came back are not
-- listed (the next claim drops them), nor are members that are not users or jobs this
-- version cannot read (the claim reports those). (ids.lua, writers.lua and notices.lua are
-- prepended.)

local now_ms = now_or_redis(ARGV[1])
local now = string.format('%d', now_ms)
local cutoff = string.format('%d', now_ms - tonumber(ARGV[2]))
local limit = tonumber(ARGV[3])
-- Above what a running notice holds (notices.lua), as the claim reads.
local low = '-inf'
local noticed = held_through(now_ms)
if noticed then
  low = '(' .. string.format('%d', noticed)
end
local out = {
  redis.call('ZCOUNT', KEYS[1], low, cutoff),
  redis.call('ZCOUNT', KEYS[3], '-inf', now),
  redis.call('ZCOUNT', KEYS[2], '-inf', now),
}
local listed = 0

local function list(user, r, m, seen, queued, attempts)
  out[#out + 1] = user
  out[#out + 1] = r
  out[#out + 1] = m
  out[#out + 1] = seen or ''
  out[#out + 1] = queued
  out[#out + 1] = tonumber(attempts) or 0
  listed = listed + 1
end

for _, user in ipairs(redis.call('ZRANGE', KEYS[3], '-inf', now, 'BYSCORE', 'LIMIT', 0, limit)) do
  local job = redis.call('HGET', KEYS[4], user) or 'i,0,0'
  local r, m, n = string.match(job, '^(%a),(%-?%d+),(%d+)')
  local seen = redis.call('ZSCORE', KEYS[1], user)
  if not REASONS[r] or not is_user(user) then
    -- Not listed: the claim reports it.
  elseif r == 'o' or not seen or (tonumber(m) ~= 0 and tonumber(seen) <= tonumber(m)) then
    list(user, r, m, seen, 1, n)
  end
end

if listed < limit then
  local rows = redis.call('ZRANGE', KEYS[1], low, cutoff, 'BYSCORE', 'LIMIT', 0, limit - listed, 'WITHSCORES')
  for i = 1, #rows, 2 do
    local user, seen = rows[i], rows[i + 1]
    local due = redis.call('ZSCORE', KEYS[3], user)
    if not is_user(user) then
      -- Not listed: the claim reports it.
    elseif not due then
      list(user, 'i', 0, seen, 0, 0)
    elseif tonumber(due) > tonumber(now) then
      -- Scheduled but not due yet (a grace period): the claim takes them now, with the
      -- scheduled reason. Due scheduled users were listed above.
      local job = redis.call('HGET', KEYS[4], user) or 'i,0,0'
      local r, m, n = string.match(job, '^(%a),(%-?%d+),(%d+)')
      if REASONS[r] then
        list(user, r, m, seen, 0, n)
      end
    end
  end
end
return out
