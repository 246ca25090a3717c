-- Notices (`Adoption::not_before`): `meta` (KEYS[8]) field `notices` is
-- "seen_by:until,..." (ms). While a notice runs (until > now), no user last seen at or
-- before its seen_by is erased for inactivity. `held_through` in protocol.rs.
local function held_through(now)
  local held
  for seen_by, till in string.gmatch(redis.call('HGET', KEYS[8], 'notices') or '', '(%-?%d+):(%-?%d+)') do
    seen_by, till = tonumber(seen_by), tonumber(till)
    if till > now and (not held or seen_by > held) then
      held = seen_by
    end
  end
  return held
end
