-- The start of top.lua and freeze.lua (each is loaded after it, as one script):
-- the top of one window's sorted set, ties broken by host name.
--
-- top_of(key, limit) -> {above, tied, cutoff}: the members above the cut-off
-- score with their scores, and the members that tie at it, smallest names
-- first, as many as fit; or {all, {}} when fewer than the limit have a
-- positive score. Members of one score are in byte order, which for UTF-8 is
-- the code-point order the memory store sorts by.
local function top_of(key, limit)
  local top = redis.call('ZRANGE', key, '+inf', '(0', 'BYSCORE', 'REV',
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
  local tied = redis.call('ZRANGE', key, cutoff, cutoff, 'BYSCORE',
    'LIMIT', 0, limit - keep / 2)
  return {above, tied, cutoff}
end
