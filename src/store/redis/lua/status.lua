-- Read-only: what the store holds about one user.
--
-- KEYS: 1 seen, 2 lease, 3 queue, 4 job, 6 batches, 12 probes
-- ARGV: 1 user
-- Returns {last seen or false, due or false, job or false, lease deadline or false, the
-- census's "<last probed>,<last reachable>" or false}.
-- (batches.lua is prepended.)

local user = ARGV[1]
local _, deadline = batch_of(user)
return {
  redis.call('ZSCORE', KEYS[1], user) or false,
  redis.call('ZSCORE', KEYS[3], user) or false,
  redis.call('HGET', KEYS[4], user) or false,
  deadline and tostring(deadline) or false,
  redis.call('HGET', KEYS[12], user) or false,
}
