-- The layout fence of a plain write (README guarantee 15), for writes too large to pass
-- through Lua cheaply: interactions go as a transaction, MULTI, this guard, the plain
-- `ZADD GT` on KEYS[1], unguard.lua, EXEC. When the fence refuses (fence.lua, prepended),
-- the guard sets KEYS[1] aside to KEYS[14] and leaves the string SET_ASIDE in its place, so
-- that the `ZADD` fails (WRONGTYPE) without writing; unguard.lua puts it back. Nothing of
-- this is seen outside the transaction. Flagged `allow-oom`, so that memory pressure never
-- stops the guard while the `ZADD` runs.
--
-- KEYS: 1 seen, 8 meta, 14 seen set aside (the other keys of the namespace as in every script)
-- ARGV: none
-- Returns 0; the fence's `LAYOUT` error when it refuses (the write is then not made).

-- A fence it cannot read (a `meta` of another type) refuses too: a failing guard would
-- let the `ZADD` through.
local ok, refused = pcall(function() return fence() end)
if not ok then
  refused = redis.error_reply('LAYOUT unreadable: ' .. tostring(refused.err or refused))
end
if refused then
  if redis.call('EXISTS', KEYS[1]) == 1 then
    redis.call('RENAME', KEYS[1], KEYS[14])
  end
  redis.call('SET', KEYS[1], SET_ASIDE)
  return refused
end
return 0
