-- The start of both ingest scripts (add.lua and add_carefully.lua are each
-- loaded after this preamble, as one script).
--
-- KEYS: the window keys of this call (one per TTL in ARGV[2]), then the writes
-- hash (see settle.lua); then, if requests of the call carry idempotency keys,
-- the keys' index (<prefix>:keys) and one record key per such request.
-- ARGV[1]: the deadline to start by, on the Redis clock, in microseconds.
-- ARGV[2]: msgpack of {ttls, ...}: the TTL in ms of each window key, then what
--          the script that follows reads.
-- ARGV[3], ARGV[4]: the write's token and sequence number.
-- ARGV[5], only with idempotency keys: msgpack of {now, expiry, ttl, max, entries}:
--          the instance clock (Unix seconds), when a key kept now expires on it,
--          the PEXPIRE (ms) for that, --max-idempotency-keys, and per keyed
--          request {request, fingerprint, expired, token, digest}: its place in
--          the call (1-based), what to keep of it, the token of its in-flight
--          mark ('' if none: see claim.lua), and its digest (hex). Entry j's
--          record is KEYS[n + 2 + j].
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
local n = #data[1]
local WRITES = KEYS[n + 1]
local highest = {}
for i = 1, n do
  local top = redis.pcall('ZRANGE', KEYS[i], -1, -1, 'WITHSCORES')
  if top['err'] then
    return redis.error_reply(top['err'] .. ' (' .. KEYS[i] ..
      '): is another application using the same --redis-prefix?')
  end
  highest[i] = top[2] and tonumber(top[2]) or 0
end

-- Idempotency keys.
local keyed = ARGV[5] and cmsgpack.unpack(ARGV[5])
local INDEX = KEYS[n + 2]
local entries = keyed and keyed[5] or {}

-- What entry j's key holds: 'new' (nothing, or a record expired on the
-- instance clock), 'mine' (this request's own in-flight mark), 'flight'
-- (another request's mark), or 'record' and its fingerprint and expired count.
local function key_state(j)
  local value = redis.call('GET', KEYS[n + 2 + j])
  if not value then
    return 'new'
  end
  local token = string.match(value, '^f:(.*)$')
  if token then
    if token == entries[j][4] then
      return 'mine'
    end
    return 'flight'
  end
  local expiry, fingerprint, expired = string.match(value, '^(%d+):(%d+):(%d+)$')
  if expiry and tonumber(expiry) > keyed[1] then
    return 'record', fingerprint, expired
  end
  return 'new'
end

-- Live keys, by the instance clock; trims up to 1000 expired ones from the index
-- (their records expire on their own).
local function live_keys()
  local gone = redis.call('ZCOUNT', INDEX, '-inf', keyed[1])
  if gone > 0 then
    redis.call('ZREMRANGEBYRANK', INDEX, 0, math.min(gone, 1000) - 1)
  end
  return redis.call('ZCOUNT', INDEX, '(' .. keyed[1], '+inf')
end

-- Keep entry j's outcome (replacing its in-flight mark, if any).
local function keep(j)
  local entry = entries[j]
  redis.call('SET', KEYS[n + 2 + j], keyed[2] .. ':' .. entry[2] .. ':' .. entry[3],
    'PX', keyed[3])
  redis.call('ZADD', INDEX, keyed[2], entry[5])
end
