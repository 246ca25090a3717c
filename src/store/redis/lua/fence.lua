-- The layout fence: a write lands only in a layout the pruner reads (README guarantee 15).
--
-- The hash tag of a script's keys names the layout the caller assumes: the namespace
-- alone (`{retention}`) is the one-shard layout, a shard's tag names its count
-- (`{retention:2of4.17}`). That tag's `meta` (KEYS[8]) says when the layout is no longer
-- read: `moved` (RedisStore::reshard is moving, or moved, its users to another count) or,
-- on the namespace's own tag, `resharding` or a recorded shard count other than 1. Then
-- the script refuses with a `LAYOUT` error before its first write, and the caller reads
-- the recorded layout again (see `Sharded` in sharded.rs).
local function fence()
  local f = redis.call('HMGET', KEYS[8], 'moved', 'resharding', 'shards')
  if f[1] then
    return redis.error_reply('LAYOUT moved to ' .. f[1] .. ' shards')
  end
  if f[2] then
    return redis.error_reply('LAYOUT resharding ' .. f[2])
  end
  if f[3] and f[3] ~= '1' then
    return redis.error_reply('LAYOUT stored ' .. f[3] .. ' shards')
  end
  return nil
end
