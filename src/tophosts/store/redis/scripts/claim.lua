-- Marking an idempotency key in flight while its request's body is still
-- arriving, so that every instance answers 409 to another request with it.
--
-- KEYS[1]: the key's record (see keys.py). ARGV: the mark's token, how long it
-- lasts (ms: --body-timeout plus --redis-timeout, so that the mark of an
-- instance that died goes by itself), the instance clock (Unix seconds).
-- Reply: 0 if another request's mark is there (nothing changed); 1 if the key
-- has a live record (nothing changed: the write will replay or refuse it);
-- 2 once the mark is set. The ingest script that keeps the key's outcome
-- replaces the mark; release.lua deletes it if the request ends otherwise.
local value = redis.call('GET', KEYS[1])
if value then
  if string.sub(value, 1, 2) == 'f:' then
    return 0
  end
  local expiry = tonumber(string.match(value, '^(%d+):'))
  if expiry and expiry > tonumber(ARGV[3]) then
    return 1
  end
end
redis.call('SET', KEYS[1], 'f:' .. ARGV[1], 'PX', ARGV[2])
return 2
