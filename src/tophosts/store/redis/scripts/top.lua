-- The top of one window, ties broken by host name.
--
-- KEYS[1]: the window's sorted set. ARGV[1]: the limit.
-- Reply: {above, tied, cutoff}: the members above the cut-off score with their
-- scores, and the members that tie at it, smallest names first, as many as
-- fit; or {all, {}} when fewer than the limit have a positive score.
local limit = tonumber(ARGV[1])
local top = redis.call('ZRANGE', KEYS[1], '+inf', '(0', 'BYSCORE', 'REV',
  'LIMIT', 0, limit, 'WITHSCORES')
if #top < 2 * limit then
  return {top, {}}
end
local cutoff = top[#top]
local keep = #top
while keep > 0 and top[keep] == cutoff do
  keep = keep - 2
end
local above = {}
for i = 1, keep do
  above[i] = top[i]
end
local tied = redis.call('ZRANGE', KEYS[1], cutoff, cutoff, 'BYSCORE',
  'LIMIT', 0, limit - keep / 2)
return {above, tied, cutoff}
