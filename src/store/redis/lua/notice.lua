-- Adds a notice (see notices.lua): notices that ended go, and so do running ones the new
-- one covers (a later or equal seen_by and until); nothing is added if a running one covers
-- it (an adoption in chunks keeps one notice); at most ARGV[4] run. `Notice::added_to` in
-- protocol.rs.
--
-- KEYS: 8 meta
-- ARGV: 1 seen_by (ms), 2 until (ms), 3 now (ms), or '' for Redis's own clock, 4 the most
--       notices that may run at once
-- Returns 1, or 0 when that many others run already (nothing written); a `LAYOUT` error if
-- the layout of these keys is no longer read (fence.lua, writers.lua and notices.lua are
-- prepended).

local refused = fence()
if refused then
  return refused
end
local now = now_or_redis(ARGV[3])
local new_seen, new_until = tonumber(ARGV[1]), tonumber(ARGV[2])
local running = {}
for _, n in ipairs(read_notices()) do
  local s, u = n[1], n[2]
  if u > now then
    if s >= new_seen and u >= new_until then
      return 1
    end
    if not (new_seen >= s and new_until >= u) then
      running[#running + 1] = string.format('%d:%d', s, u)
    end
  end
end
if #running >= tonumber(ARGV[4]) then
  return 0
end
running[#running + 1] = ARGV[1] .. ':' .. ARGV[2]
redis.call('HSET', KEYS[8], 'notices', table.concat(running, ','))
return 1
