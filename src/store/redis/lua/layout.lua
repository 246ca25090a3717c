-- The shard count of a namespace, kept as `shards` in the `meta` of its home (the
-- namespace's own hash tag). Checks that ARGV[1] matches it, recording it when the
-- namespace is new. Returns '' when it matches, otherwise why not:
--   'moving <from> <to>': a resharding is unfinished;
--   'stored <count>': the namespace has another shard count;
--   'unsharded': the namespace holds users in the one-shard layout of versions that did
--   not record a count, and is opened with more than one shard.
--
-- KEYS: 1 seen, 3 queue, 8 meta
-- ARGV: 1 shard count

local count = tonumber(ARGV[1])
local moving = redis.call('HGET', KEYS[8], 'resharding')
if moving then
  return 'moving ' .. moving
end
local stored = redis.call('HGET', KEYS[8], 'shards')
if stored then
  if tonumber(stored) == count then
    return ''
  end
  return 'stored ' .. stored
end
if count ~= 1 and (redis.call('ZCOUNT', KEYS[1], '-inf', '(+inf') > 0
    or redis.call('ZCARD', KEYS[3]) > 0) then
  return 'unsharded'
end
redis.call('HSET', KEYS[8], 'shards', count)
return ''
