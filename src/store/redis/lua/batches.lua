-- Shared by the scripts that need to know whether a user is being erased (prepended to
-- them when loaded). Running erasures are leased per batch: `lease` (KEYS[2]) scores batch
-- ids by their deadline and `batches` (KEYS[6]) maps each batch id to its users as
-- ",u1,u2,...,". Only a few batches run at a time (about one per pruner), so scanning them
-- is cheap.

-- The batch holding `user`, and its deadline; nil when the user is not being erased.
local function batch_of(user)
  local needle = ',' .. user .. ','
  local batches = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  for i = 1, #batches, 2 do
    local members = redis.call('HGET', KEYS[6], batches[i])
    if members and string.find(members, needle, 1, true) then
      return batches[i], tonumber(batches[i + 1])
    end
  end
  return nil
end
