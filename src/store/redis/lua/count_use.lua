-- Counts one use in a fixed window and lets the counter expire with the window.
--
-- KEYS: 1 counter
-- ARGV: 1 time to live (ms)
-- Returns the count in this window, this use included.

local count = redis.call('INCR', KEYS[1])
if count == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return count
