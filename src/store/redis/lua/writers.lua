-- Shared by the scripts that judge writers (prepended to them when loaded). Every process
-- that records interactions keeps a heartbeat in `writers` (KEYS[7]): field = writer id,
-- value = "<Redis TIME of the heartbeat, ms>,<interactions it has not written>".

-- Redis's own clock in ms: the one clock of every process sharing the store.
local function redis_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- "Now" given by the caller (a manual clock), or Redis's clock when the argument is empty.
local function now_or_redis(arg)
  if arg == '' then
    return redis_now()
  end
  return tonumber(arg)
end

-- Why inactivity claims must wait (nil if they need not), and the writers silent for
-- longer than `dead_ms` (dead: what they buffered is lost). A writer that reports unwritten
-- interactions, or that missed its heartbeats for longer than `silent_ms` (it may be cut off
-- from Redis and buffering), holds inactivity claims back: a user whose interaction it holds
-- would look inactive. A heartbeat this version cannot read holds them back too.
local function writers_hold(silent_ms, dead_ms)
  local real = redis_now()
  local hold, dead = nil, {}
  local all = redis.call('HGETALL', KEYS[7])
  for i = 1, #all, 2 do
    local id, value = all[i], all[i + 1]
    local last, backlog = string.match(value, '^(%d+),(%d+)$')
    last, backlog = tonumber(last), tonumber(backlog)
    if not last then
      hold = hold or ('writer ' .. id .. ' left a heartbeat this version cannot read: ' .. value)
    elseif real - last > dead_ms then
      dead[#dead + 1] = id
    elseif backlog > 0 then
      hold = hold or string.format('writer %s holds %d unwritten interactions', id, backlog)
    elseif real - last > silent_ms then
      hold = hold or string.format(
        'writer %s missed its heartbeats for %d s (it may be cut off from Redis)',
        id, math.floor((real - last) / 1000))
    end
  end
  return hold, dead
end
