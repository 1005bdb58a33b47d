-- The start of both ingest scripts (add.lua and add_carefully.lua are each
-- loaded after this preamble, as one script).
--
-- KEYS: the window keys of this call, then the writes hash (see settle.lua).
-- ARGV[1]: the deadline to start by, on the Redis clock, in microseconds.
-- ARGV[2]: msgpack of {ttls, ...}: the TTL in ms of each window key, then what
--          the script that follows reads.
-- ARGV[3], ARGV[4]: the write's token and sequence number.
--
-- Counts and sums are decimal strings: a Lua number would print large ones
-- inexactly. Doubles round monotonically, so "a + b > MAX" is decided exactly
-- even when a or b is past 2^53.
-- Replies {status, sec, usec, ...}: sec, usec is the Redis clock at the start;
-- status 0 means Redis started too late and nothing was written.
local now = redis.call('TIME')
if tonumber(now[1]) * 1000000 + tonumber(now[2]) > tonumber(ARGV[1]) then
  return {0, now[1], now[2]}
end
local MAX = 9007199254740991
local data = cmsgpack.unpack(ARGV[2])
local WRITES, n = KEYS[#KEYS], #KEYS - 1
local highest = {}
for i = 1, n do
  local top = redis.pcall('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
  if top['err'] then
    return redis.error_reply(top['err'] .. ' (' .. KEYS[i] ..
      '): is another application using the same --redis-prefix?')
  end
  highest[i] = top[2] and tonumber(top[2]) or 0
end
