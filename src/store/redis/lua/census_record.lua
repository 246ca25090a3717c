-- Records the census's answers: when each user was probed, and for a reachable one when
-- they were last reachable (`probes`, KEYS[12]: user -> "<last probed>,<last reachable>"
-- in ms). Users no longer tracked (not in `seen`, KEYS[1]: erased meanwhile, or being
-- erased) get nothing, so that no key keeps an erased user's id; `finish.lua` removes
-- what the census kept of the users it erases.
--
-- KEYS: 1 seen, 8 meta, 12 probes
-- ARGV: 1 time (ms), 2 '1' to cap it at Redis's clock ('' when the writer's clock decides
--       and capped it itself), then per answer: user, 1 if reachable (0: gone)

local refused = fence()
if refused then
  return refused
end
local at = tonumber(ARGV[1])
if ARGV[2] ~= '' then
  -- Never later than Redis's now (invariant 11: a writer's clock may run ahead).
  local t = redis.call('TIME')
  at = math.min(at, tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end
for i = 3, #ARGV, 2 do
  local user, reachable = ARGV[i], ARGV[i + 1]
  if redis.call('ZSCORE', KEYS[1], user) then
    local probed, seen = at, 0
    local old = redis.call('HGET', KEYS[12], user)
    if old then
      local p, r = string.match(old, '^(%-?%d+),(%-?%d+)$')
      if p then
        probed, seen = math.max(at, tonumber(p)), tonumber(r)
      end
    end
    if reachable == '1' then
      seen = math.max(seen, at)
    end
    redis.call('HSET', KEYS[12], user, string.format('%d,%d', probed, seen))
  end
end
return 0
