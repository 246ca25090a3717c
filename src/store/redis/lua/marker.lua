-- The marker of `seen`: a member that is never a user ("marker", score +inf, so no claim,
-- count or preview of users ever sees it), written once when the namespace is first used
-- and recorded in `meta`. If `meta` says it was written but `seen` lacks it, the set was
-- lost (evicted or deleted) after that: interactions written since recreated it without
-- the marker. Returns 1 in that case, 0 otherwise; ARGV[1] = '1' writes the marker again
-- (the operator accepted the loss).
--
-- KEYS: 1 seen, 8 meta
-- (writers.lua is prepended.)

local refused = fence()
if refused then
  return refused
end
if ARGV[1] == '1' or redis.call('HEXISTS', KEYS[8], 'created') == 0 then
  redis.call('HSET', KEYS[8], 'created', string.format('%d', redis_now()))
  redis.call('ZADD', KEYS[1], 'NX', '+inf', 'marker')
  return 0
end
if redis.call('ZSCORE', KEYS[1], 'marker') then
  return 0
end
return 1
