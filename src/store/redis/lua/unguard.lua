-- Puts back what guard.lua set aside when the fence refused a plain write: the SET_ASIDE
-- string leaves KEYS[1], and KEYS[14] (if the key existed) takes its place again.
--
-- KEYS: 1 seen, 14 seen set aside (the other keys of the namespace as in every script)
-- ARGV: none
-- Returns 1 if it put something back, else 0.

if redis.call('TYPE', KEYS[1])['ok'] == 'string' and redis.call('GET', KEYS[1]) == SET_ASIDE then
  redis.call('DEL', KEYS[1])
  if redis.call('EXISTS', KEYS[14]) == 1 then
    redis.call('RENAME', KEYS[14], KEYS[1])
  end
  return 1
end
return 0
