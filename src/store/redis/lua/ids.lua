-- What a stored value must be to be read (the same rules as humans.rs and erase/mod.rs).
--
-- The canonical form of a user id, the same rule as `parse_user` in humans.rs: decimal
-- digits, no sign, no leading zero, not 0, at most MAX_USER_ID (2^53 - 1: Telegram's ids
-- have at most 52 significant bits, and every such id is exact as a Lua number). A member
-- in any other form (`013950000`, `-5`, `1.5`, `abc`, `18446744073709551616`) is not a user:
-- scripts report it and leave it where it is, and never read it as another user.
local MAX_USER_ID = 9007199254740991

local find = string.find
local function is_user(s)
  local n = #s
  -- One C call for most ids (each costs about 0.1 us in a script): up to 15 digits an id
  -- is below MAX_USER_ID; only 16 digits need the number itself.
  if n > 16 or find(s, '^[1-9]%d*$') == nil then
    return false
  end
  return n < 16 or tonumber(s) <= MAX_USER_ID
end

-- The reason codes of `ErasureReason::code`; a job with another one cannot be read.
local REASONS = { i = true, o = true, b = true, d = true, u = true }
