-- Settling a write whose reply never came (a timeout, a dropped connection).
--
-- Every ingest call carries a token and a sequence number; when a call
-- applies, it records "<seq>:<sec>[:<refusals>]" under its token in the writes
-- hash, <prefix>:writes. A token is used by one connection, one call at a time,
-- and is retired when a call on it fails, so after the call's start deadline
-- (when it can no longer start) its field says for good whether it applied.
-- This only reads, so it gives the same answer however often it is asked: a
-- settle whose own reply is lost is simply asked again. The instance deletes
-- the field once it has answered (and at close; sweep.lua takes those of
-- crashed instances).
--
-- KEYS[1]: the writes hash. ARGV: token, seq, the call's start deadline (us).
-- Reply: {0} before the deadline; else {1, field} if the call applied, {2} if
-- it did not (and never will).
local now = redis.call('TIME')
if tonumber(now[1]) * 1000000 + tonumber(now[2]) <= tonumber(ARGV[3]) then
  return {0}
end
local field = redis.call('HGET', KEYS[1], ARGV[1])
if field and string.sub(field, 1, #ARGV[2] + 1) == ARGV[2] .. ':' then
  return {1, field}
end
return {2}
