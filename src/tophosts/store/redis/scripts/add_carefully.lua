-- The careful ingest path, after check_keys.lua: request by request, host by host.
--
-- ARGV[2] = msgpack {ttls, groups, cap}: one group per request, a list of
-- entries {key index, host, count, host, count, ...}. Each group is applied
-- whole or refused whole, in order; one group's refusal never touches another.
-- A group with an idempotency key is first looked at for its key: one with a
-- record is not applied (a replay if the fingerprint is the same, else a
-- conflict), nor one with another request's in-flight mark, nor a new one when
-- --max-idempotency-keys are kept. Else a group is refused for the first host
-- that would take its window total past MAX (anywhere in the group), else for
-- the first new host that would take its window past the cap: overflow beats
-- the cap, as in the memory store. A group applied keeps its key's outcome.
-- Reply: {1, sec, usec, refusals}, the refusals being
-- {group, entry, host, that host's score or '-1' for the cap, ...}, or, for a
-- key, {group, 0, 'replay', expired} / {group, 0, 'conflict' | 'flight' |
-- 'full', '0'}; they are also kept in the write's record, for a settle to read.
local ttls, groups, cap = data[1], data[2], tonumber(data[3])
local cards = {}
for i = 1, n do
  cards[i] = redis.call('ZCARD', KEYS[i])
end
local entry_of, live = {}, 0
if keyed then
  for j = 1, #entries do
    entry_of[entries[j][1]] = j
  end
  live = live_keys()
end
local refusals = {}
for g = 1, #groups do
  local group = groups[g]
  local refusal = nil
  local slot = entry_of[g]
  if slot then
    local state, fingerprint, expired = key_state(slot)
    if state == 'record' then
      if fingerprint == entries[slot][2] then
        refusal = {g, 0, 'replay', expired}
      else
        refusal = {g, 0, 'conflict', '0'}
      end
    elseif state == 'flight' then
      refusal = {g, 0, 'flight', '0'}
    elseif live >= keyed[4] then
      refusal = {g, 0, 'full', '0'}
    end
  end
  -- A group is refused whole, for the first of its hosts (windows in the
  -- order its events name them, hosts in the order they appear) that would
  -- take its window total past MAX; else for the first new host that would
  -- take its window past --max-tracked-hosts (score '-1'). An overflow
  -- anywhere in the group comes before the cap: the memory store's order.
  for e = 1, (refusal and 0 or #group) do
    local entry = group[e]
    local key = KEYS[entry[1]]
    for j = 2, #entry, 2 do
      local score = redis.call('ZSCORE', key, entry[j])
      if (score and tonumber(score) or 0) + tonumber(entry[j + 1]) > MAX then
        refusal = {g, e, entry[j], score or '0'}
        break
      end
    end
    if refusal then
      break
    end
  end
  local fresh = {}
  if not refusal then
    for e = 1, #group do
      local entry = group[e]
      local i = entry[1]
      local n = fresh[i] or 0
      for j = 2, #entry, 2 do
        if not redis.call('ZSCORE', KEYS[i], entry[j]) then
          n = n + 1
          if cards[i] + n > cap then
            refusal = {g, e, entry[j], '-1'}
            break
          end
        end
      end
      fresh[i] = n
      if refusal then
        break
      end
    end
  end
  if refusal then
    for k = 1, 4 do
      refusals[#refusals + 1] = refusal[k]
    end
  else
    for e = 1, #group do
      local entry = group[e]
      local key = KEYS[entry[1]]
      for j = 2, #entry, 2 do
        redis.call('ZINCRBY', key, entry[j + 1], entry[j])
      end
    end
    for i, more in pairs(fresh) do
      cards[i] = cards[i] + more
    end
    if slot then
      keep(slot)
      live = live + 1
    end
  end
end
for i = 1, n do
  redis.call('PEXPIRE', KEYS[i], ttls[i])
end
redis.call('HSET', WRITES, ARGV[3], ARGV[4] .. ':' .. now[1] .. ':' .. cmsgpack.pack(refusals))
return {1, now[1], now[2], refusals}
