-- Distributed rate limiter: ban keys plus sliding-window logs, checked and taken atomically.
--
-- KEYS[1 .. n_bans]    ban keys: while one exists, nothing is admitted until it expires.
-- KEYS[n_bans+1 .. ]   sliding-window logs: sorted sets of admission times (microseconds,
--                      Redis TIME), one member per admitted call.
-- ARGV[1]              n_bans
-- ARGV[2]              member: unique id of this attempt
-- ARGV[3 + 2(i-1)]     limit of log i
-- ARGV[4 + 2(i-1)]     window of log i, in microseconds
--
-- Returns {1, 0} when a permit was taken (recorded in every log), {0, wait_us} otherwise,
-- wait_us being the earliest time at which every ban is over and every log has room.
--
-- Invariant: a log never holds two members less than `window` apart with `limit` others
-- between them. A call is admitted at `now` only if fewer than `limit` members lie in
-- (now - window, now]; so every half-open interval of length `window` holds at most `limit`
-- admissions (take its last admission: all others in the interval were within the window
-- when it was admitted). The clock is Redis's, shared by every replica.

local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local n_bans = tonumber(ARGV[1])
local member = ARGV[2]
local wait = 0

for i = 1, n_bans do
  local pttl = redis.call('PTTL', KEYS[i])
  if pttl > 0 and pttl * 1000 > wait then
    wait = pttl * 1000
  end
end

for i = n_bans + 1, #KEYS do
  local j = i - n_bans
  local limit = tonumber(ARGV[1 + 2 * j])
  local window = tonumber(ARGV[2 + 2 * j])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  local count = redis.call('ZCARD', KEYS[i])
  if count >= limit then
    -- Room appears when the member `limit` places from the newest leaves the window.
    local oldest = redis.call('ZRANGE', KEYS[i], count - limit, count - limit, 'WITHSCORES')
    local until_free = tonumber(oldest[2]) + window - now
    if until_free > wait then
      wait = until_free
    end
  end
end

if wait > 0 then
  return {0, wait}
end

for i = n_bans + 1, #KEYS do
  local j = i - n_bans
  local window = tonumber(ARGV[2 + 2 * j])
  redis.call('ZADD', KEYS[i], now, member)
  redis.call('PEXPIRE', KEYS[i], math.ceil(window / 1000) + 1000)
end
return {1, 0}
