-- Shared by the scripts that need to know whether a user is being erased (prepended to
-- them when loaded). Running erasures are leased per batch: `lease` scores batch ids by
-- their deadline and `batch:<id>` holds the batch's users as ",u1,u2,...,". Only a few
-- batches run at a time (about one per pruner), so scanning them is cheap; the batch keys
-- share the namespace's hash tag with KEYS[2].

local prefix = string.sub(KEYS[2], 1, -6) -- "{ns}:lease" -> "{ns}:"

local function batch_key(id)
  return prefix .. 'batch:' .. id
end

-- The batch holding `user`, and its deadline; nil when the user is not being erased.
local function batch_of(user)
  local needle = ',' .. user .. ','
  local batches = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
  for i = 1, #batches, 2 do
    local members = redis.call('GET', batch_key(batches[i]))
    if members and string.find(members, needle, 1, true) then
      return batches[i], tonumber(batches[i + 1])
    end
  end
  return nil
end
