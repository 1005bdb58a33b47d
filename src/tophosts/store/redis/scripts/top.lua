-- The top of one or more windows, after select.lua.
--
-- ARGV[1]: the limit. ARGV[2]: keys per window, n.
-- KEYS: n keys per window, tried in turn: the first that exists is answered,
-- else the last. /stats sends one, the live window; history sends two, the
-- frozen window and then its live key (answered until the window is frozen).
-- Reply: one {above, tied, cutoff} per window (see select.lua).
local limit, per = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for w = 1, #KEYS / per do
  local key = KEYS[w * per]
  for i = (w - 1) * per + 1, w * per - 1 do
    if redis.call('EXISTS', KEYS[i]) == 1 then
      key = KEYS[i]
      break
    end
  end
  out[w] = top_of(key, limit)
end
return out
