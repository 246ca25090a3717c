-- Notices (`Adoption::not_before`): `meta` (KEYS[8]) field `notices` is
-- "seen_by:until,..." (ms). While a notice runs (until > now), no user last seen at or
-- before its seen_by is erased for inactivity. A part this version cannot read holds every
-- user (2^53, as `Notice::UNREADABLE`) until the notices are ended: a value it did not
-- write never lets an erasure through. `held_through` in protocol.rs.
local UNREADABLE_NOTICE = 9007199254740992

-- The notices as {seen_by, until} pairs, an unreadable part as {2^53, 2^53}.
local function read_notices()
  local out = {}
  for part in string.gmatch(redis.call('HGET', KEYS[8], 'notices') or '', '[^,]+') do
    local seen_by, till = string.match(part, '^(%-?%d+):(%-?%d+)$')
    if seen_by then
      out[#out + 1] = { tonumber(seen_by), tonumber(till) }
    else
      out[#out + 1] = { UNREADABLE_NOTICE, UNREADABLE_NOTICE }
    end
  end
  return out
end

local function held_through(now)
  local held
  for _, n in ipairs(read_notices()) do
    if n[2] > now and (not held or n[1] > held) then
      held = n[1]
    end
  end
  return held
end
