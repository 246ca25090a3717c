-- Records interactions: seen[user] = max(seen[user], ms), never moving a user back (GT).
--
-- KEYS: 1 seen, 8 meta
-- ARGV: ms, user, ms, user, ... (at most INTERACTION_CHUNK pairs)
-- Returns 0; a `LAYOUT` error if the layout of these keys is no longer read (fence.lua is
-- prepended).

local refused = fence()
if refused then
  return refused
end
redis.call('ZADD', KEYS[1], 'GT', unpack(ARGV))
return 0
