-- Read-only: why inactivity claims would be held back by writers now ('' if they would
-- not be).
--
-- KEYS: 7 writers
-- ARGV: 1 silent after (ms), 2 dead after (ms)
-- (writers.lua is prepended.)

local hold = writers_hold(tonumber(ARGV[1]), tonumber(ARGV[2]))
return hold or ''
