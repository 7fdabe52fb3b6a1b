"""The shared limiter's Lua scripts (_limiter.py explains the algorithm; this is its Redis side).

Each script is atomic and uses Redis `TIME` as its only clock unless a test passes "now".
"""

from __future__ import annotations

# Shared by every script: `clock(arg)` is the explicit now (µs) or Redis TIME; `fraction(key, now,
# window, recovery)` is the effective rate fraction from the slowdown hash {fraction, at (µs)}:
# it recovers linearly from the end of the window that followed the last halving.
_PRELUDE = """
local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local function fraction(key, now, window, recovery)
  local slow = redis.call('HMGET', key, 'fraction', 'at')
  if not slow[1] or not slow[2] then return 1 end
  local elapsed = math.max(0, now - tonumber(slow[2]) - window)
  return math.min(1, tonumber(slow[1]) + recovery * elapsed)
end
"""

# KEYS = TAT, pause, slowdown. ARGV[1] = full-rate emission interval (µs), ARGV[2] = max wait
# (µs), ARGV[3] = TAT TTL (ms), ARGV[4] = now (µs) or "", ARGV[5] = window (µs), ARGV[6] =
# recovery (fraction per µs). Returns {granted (1|0), wait (µs), slot (µs)}: if granted, the
# caller may send after `wait`, at `slot` on Redis' clock; if not, nothing was reserved and the
# slot is `wait` away.
ACQUIRE = (
    _PRELUDE
    + """
local now = clock(ARGV[4])
local f = fraction(KEYS[3], now, tonumber(ARGV[5]), tonumber(ARGV[6]))
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
local start = math.max(tat, now, paused)
local wait = start - now
if wait > tonumber(ARGV[2]) then
  return {0, string.format('%.0f', wait), string.format('%.0f', start)}
end
local interval = tonumber(ARGV[1]) / f
redis.call('SET', KEYS[1], string.format('%.0f', start + interval), 'PX', ARGV[3])
return {1, string.format('%.0f', wait), string.format('%.0f', start)}
"""
)

# KEYS = pause, slowdown. ARGV[1] = pause length (µs), ARGV[2] = now (µs) or "", ARGV[3] = "1" to
# slow down as well, ARGV[4] = window (µs), ARGV[5] = recovery (fraction per µs), ARGV[6] = factor,
# ARGV[7] = floor. Extends the pause to now + length unless it already runs longer; if asked,
# multiplies the effective fraction by `factor` unless the last halving is under a window old.
# Returns {pause end (µs), halved (1|0), effective fraction}.
REPORT = (
    _PRELUDE
    + """
local now = clock(ARGV[2])
local window = tonumber(ARGV[4])
local recovery = tonumber(ARGV[5])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local until_ = math.max(current, now + tonumber(ARGV[1]))
local ttl = math.ceil((until_ - now) / 1000) + 60000
redis.call('SET', KEYS[1], string.format('%.0f', until_), 'PX', ttl)
local f = fraction(KEYS[2], now, window, recovery)
local halved = 0
if ARGV[3] == '1' then
  local last = redis.call('HGET', KEYS[2], 'at')
  if not last or now - tonumber(last) >= window then
    f = math.max(tonumber(ARGV[7]), f * tonumber(ARGV[6]))
    redis.call('HSET', KEYS[2], 'fraction', string.format('%.17g', f),
               'at', string.format('%.0f', now))
    -- Expire when fully recovered: from then on, no key and the formula both give 1.
    redis.call('PEXPIRE', KEYS[2], math.ceil((window + (1 - f) / recovery) / 1000) + 1000)
    halved = 1
  end
end
return {string.format('%.0f', until_), halved, string.format('%.17g', f)}
"""
)

# KEYS = pause, slowdown. ARGV[1] = now (µs) or "", ARGV[2] = window (µs), ARGV[3] = recovery.
# Returns {pause left (µs, 0 if none), effective fraction}. Reads only.
STATE = (
    _PRELUDE
    + """
local now = clock(ARGV[1])
local paused = tonumber(redis.call('GET', KEYS[1]) or '0')
local f = fraction(KEYS[2], now, tonumber(ARGV[2]), tonumber(ARGV[3]))
return {string.format('%.0f', math.max(0, paused - now)), string.format('%.17g', f)}
"""
)
