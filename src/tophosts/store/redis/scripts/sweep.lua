-- Deleting the records of write tokens nothing can settle on any more.
--
-- KEYS[1]: the writes hash. ARGV[1]: an age in seconds.
-- Deletes the fields of tokens that have not applied a write for that long
-- (those of stopped or crashed instances). Reply: how many.
local oldest = tonumber(redis.call('TIME')[1]) - tonumber(ARGV[1])
local all = redis.call('HGETALL', KEYS[1])
local gone = 0
for i = 1, #all, 2 do
  local sec = tonumber(string.match(all[i + 1], '^%d+:(%d+)'))
  if not sec or sec < oldest then
    redis.call('HDEL', KEYS[1], all[i])
    gone = gone + 1
  end
end
return gone
