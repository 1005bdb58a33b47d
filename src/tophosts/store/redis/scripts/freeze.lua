-- Freezing a window, after select.lua: its top K copied, once, into a key of its own.
--
-- KEYS[1]: the window's live sorted set. KEYS[2]: its frozen sorted set.
-- ARGV[1]: K (--history-top). ARGV[2]: the frozen key's TTL, in ms.
-- The first call (from whichever instance gets here first) writes the frozen
-- key whole, in this one script; every later call finds it and does nothing,
-- so no instance can trim or rewrite a frozen window. Ties at the K-th count
-- go to the smallest names, as /stats breaks them. The live key is deleted
-- once copied: no query can reach it any more, and it may be large.
-- Reply: 1 written; 0 already frozen; 2 no live key (no data, or gone).
if redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 2
end
local top = top_of(KEYS[1], tonumber(ARGV[1]))
local above, tied, cutoff = top[1], top[2], top[3]
local args = {}
for i = 1, #above, 2 do
  args[#args + 1] = above[i + 1]
  args[#args + 1] = above[i]
end
for i = 1, #tied do
  args[#args + 1] = cutoff
  args[#args + 1] = tied[i]
end
redis.call('ZADD', KEYS[2], unpack(args))
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('UNLINK', KEYS[1])
return 1
