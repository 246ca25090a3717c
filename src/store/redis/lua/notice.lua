-- Adds a notice (see notices.lua): notices that ended are dropped; at most ARGV[4] run.
--
-- KEYS: 8 meta
-- ARGV: 1 seen_by (ms), 2 until (ms), 3 now (ms), or '' for Redis's own clock, 4 the most
--       notices that may run at once
-- Returns 1, or 0 when that many run already (nothing written); a `LAYOUT` error if the
-- layout of these keys is no longer read (fence.lua and writers.lua are prepended).

local refused = fence()
if refused then
  return refused
end
local now = now_or_redis(ARGV[3])
local running = {}
for seen_by, till in string.gmatch(redis.call('HGET', KEYS[8], 'notices') or '', '(%-?%d+):(%-?%d+)') do
  if tonumber(till) > now then
    running[#running + 1] = seen_by .. ':' .. till
  end
end
if #running >= tonumber(ARGV[4]) then
  return 0
end
running[#running + 1] = ARGV[1] .. ':' .. ARGV[2]
redis.call('HSET', KEYS[8], 'notices', table.concat(running, ','))
return 1
