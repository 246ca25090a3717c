-- A writer's heartbeat: its id and how many interactions it has not written yet, stamped
-- with Redis's clock. Runs under memory pressure too (allow-oom): a writer whose writes
-- fail must still be able to say so.
--
-- KEYS: 7 writers
-- ARGV: 1 writer id, 2 unwritten interactions, 3 '1' to remove the heartbeat instead
-- (writers.lua is prepended.)

if ARGV[3] == '1' then
  redis.call('HDEL', KEYS[7], ARGV[1])
else
  redis.call('HSET', KEYS[7], ARGV[1], string.format('%d,%d', redis_now(), tonumber(ARGV[2])))
end
return 1
