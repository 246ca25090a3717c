-- Records interactions: seen[user] = max(seen[user], ms), never moving a user back (GT),
-- and never later than now (a writer whose clock runs ahead of Redis's before it measured
-- it stores Redis's now).
--
-- KEYS: 1 seen, 8 meta
-- ARGV: 1 the largest ms of the pairs that follow, to cap them at Redis's clock, or '' when
--       the writer's clock decides (it capped them itself); then ms, user, ms, user, ... (at
--       most INTERACTION_CHUNK pairs)
-- Returns 0; a `LAYOUT` error if the layout of these keys is no longer read (fence.lua is
-- prepended).

local refused = fence()
if refused then
  return refused
end
if ARGV[1] ~= '' then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if tonumber(ARGV[1]) > now then
    for i = 2, #ARGV, 2 do
      if tonumber(ARGV[i]) > now then
        ARGV[i] = string.format('%d', now)
      end
    end
  end
end
redis.call('ZADD', KEYS[1], 'GT', unpack(ARGV, 2))
return 0
