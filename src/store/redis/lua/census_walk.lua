-- A step of the census: walks on from where it stands over tracked users idle up to a
-- time, longest idle first, and returns those to probe: without a scheduled or running
-- erasure (KEYS[4] job), not probed since a time (`probes`, KEYS[12]: user -> "<last
-- probed>,<last reachable>" in ms). The cursor, `census` in `meta` (KEYS[8]), is the last
-- interaction time the walk reached and how many users with exactly that time it passed
-- (`census_cursor` in protocol.rs): it names no user. A step that reaches the last idle
-- user ends the round and deletes the cursor.
--
-- KEYS: 1 seen, 4 job, 8 meta, 12 probes
-- ARGV: 1 idle up to (ms), 2 probed since (ms), 3 limit
-- Returns {walked, round done (0/1), users to probe...}

local refused = fence()
if refused then
  return refused
end
local idle_up_to, probed_since, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local at, skip = '-inf', 0
local start = 0
local cursor = redis.call('HGET', KEYS[8], 'census')
if cursor then
  local a, s = string.match(cursor, '^(%-?%d+),(%d+)$')
  if a then
    at, skip = a, tonumber(s)
    -- By rank, not `BYSCORE ... LIMIT skip`: a step costs O(log n) however many users
    -- share the cursor's time (an adoption gives thousands one time).
    start = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. a) + skip
  end
end
local ranked = redis.call('ZRANGE', KEYS[1], start, start + limit - 1, 'WITHSCORES')
local rows = {}
for i = 1, #ranked, 2 do
  if tonumber(ranked[i + 1]) > idle_up_to then
    break
  end
  rows[#rows + 1] = ranked[i]
  rows[#rows + 1] = ranked[i + 1]
end
local walked = #rows / 2
local members = {}
for i = 1, #rows, 2 do
  members[#members + 1] = rows[i]
end
local out = { walked, 0 }
if walked > 0 then
  local jobs = redis.call('HMGET', KEYS[4], unpack(members))
  local probes = redis.call('HMGET', KEYS[12], unpack(members))
  for i, user in ipairs(members) do
    -- Only user ids (the `seen` marker and entries written by hand are no users).
    if is_user(user) and not jobs[i] then
      local probed = probes[i] and tonumber(string.match(probes[i], '^(%-?%d+),'))
      if not probed or probed < probed_since then
        out[#out + 1] = user
      end
    end
  end
end
if walked < limit then
  out[2] = 1
  redis.call('HDEL', KEYS[8], 'census')
else
  -- `census_next` in protocol.rs.
  local last = rows[#rows]
  local same = 0
  for i = #rows, 2, -2 do
    if rows[i] ~= last then
      break
    end
    same = same + 1
  end
  if at ~= '-inf' and tonumber(last) == tonumber(at) then
    same = same + skip
  end
  redis.call('HSET', KEYS[8], 'census', string.format('%d,%d', tonumber(last), same))
end
return out
