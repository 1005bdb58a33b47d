-- Deleting an in-flight mark (claim.lua) whose request ended without keeping an
-- outcome (refused, or the client went away).
--
-- KEYS[1]: the key's record. ARGV[1]: the mark's token. Deletes the key only if
-- it still holds that mark. Reply: 1 if deleted, else 0.
if redis.call('GET', KEYS[1]) == 'f:' .. ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
