-- The fast ingest path, after check_keys.lua.
--
-- ARGV[2] = msgpack {ttls, adding, counts, cap}: per key, the sum of what this
-- call adds, and {host, count, host, count, ...} merged over all the call's
-- requests; cap is --max-tracked-hosts.
-- A host can only pass MAX in a key if the key's highest score plus all the
-- call adds to it does, and a key only pass the cap if its size plus every
-- host of the call does. An idempotency key with a record or another
-- request's in-flight mark, the same key twice, or more new keys than there is
-- room for, also needs a request-by-request look. Then nothing is written and
-- the reply is {2, sec, usec}, for the client to send the same requests to
-- add_carefully.lua. Else every count is added, the TTLs set, every key's
-- outcome kept, the write recorded under its token, and the reply is
-- {1, sec, usec}.
local ttls, adding, counts, cap = data[1], data[2], data[3], tonumber(data[4])
for i = 1, n do
  if highest[i] + tonumber(adding[i]) > MAX or
      redis.call('ZCARD', KEYS[i]) + #counts[i] / 2 > cap then
    return {2, now[1], now[2]}
  end
end
if keyed then
  local seen = {}
  for j = 1, #entries do
    local state = key_state(j)
    if state == 'record' or state == 'flight' or seen[entries[j][5]] then
      return {2, now[1], now[2]}
    end
    seen[entries[j][5]] = true
  end
  if live_keys() + #entries > keyed[4] then
    return {2, now[1], now[2]}
  end
end
for i = 1, n do
  local key, pairs = KEYS[i], counts[i]
  for j = 1, #pairs, 2 do
    redis.call('ZINCRBY', key, pairs[j + 1], pairs[j])
  end
  redis.call('PEXPIRE', key, ttls[i])
end
for j = 1, #entries do
  keep(j)
end
redis.call('HSET', WRITES, ARGV[3], ARGV[4] .. ':' .. now[1])
return {1, now[1], now[2]}
