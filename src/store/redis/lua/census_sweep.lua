-- Removes the census's field (`probes`, KEYS[12]) of users neither tracked (`seen`,
-- KEYS[1]) nor with a scheduled or running erasure (KEYS[4] job): a replica of a version
-- without the census erased them and left the field. Walks the hash a page at a time with
-- `HSCAN`, from where the last sweep stopped (`census_sweep` in `meta`, KEYS[8]: HSCAN's
-- cursor, no id).
--
-- KEYS: 1 seen, 4 job, 8 meta, 12 probes
-- ARGV: 1 about how many fields to look at
-- Returns how many fields it removed.

local refused = fence()
if refused then
  return refused
end
local cursor = redis.call('HGET', KEYS[8], 'census_sweep') or '0'
local page = redis.call('HSCAN', KEYS[12], cursor, 'COUNT', ARGV[1])
local removed = 0
for i = 1, #page[2], 2 do
  local user = page[2][i]
  if not redis.call('ZSCORE', KEYS[1], user) and redis.call('HEXISTS', KEYS[4], user) == 0 then
    redis.call('HDEL', KEYS[12], user)
    removed = removed + 1
  end
end
if page[1] == '0' then
  redis.call('HDEL', KEYS[8], 'census_sweep')
else
  redis.call('HSET', KEYS[8], 'census_sweep', page[1])
end
return removed
