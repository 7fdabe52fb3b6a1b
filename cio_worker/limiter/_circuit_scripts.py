"""The circuit breaker's Lua scripts (_circuit.py explains the design; this is its Redis side).

One hash per bucket (keys.circuit) holds everything, so each transition is one atomic script:
  state        'open' while the family is considered down; absent or 'closed' otherwise
  failures     transient failures in a row while closed (reset by any success)
  failed_at    ms of the last of them (older than the window: the count starts again)
  opened_at    ms the circuit opened
  interval     ms between probes now (doubles after each failed probe, up to the cap)
  next_probe   ms before which no probe may start
  probe        token of the caller probing now, and probe_until, ms its probe lease ends
  released_at  ms the sweeper released a parked job to serve as the next probe (cleared when a
               probe starts)
Redis `TIME` is the only clock (hosts' clocks may disagree); tests may pass "now" in ms.
"""

from __future__ import annotations

_CLOCK = """
local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function num(value) return tonumber(value or '0') or 0 end
"""

# KEYS: circuit. ARGV: probe token, probe lease (ms), now (ms) or ''.
# Returns {'closed', 0} (send), {'probe', 0} (send: you are the one probe; report the outcome
# with the same token) or {'open', ms until the next probe may start} (do not send).
ADMIT = (
    _CLOCK
    + """
local now = clock(ARGV[3])
local c = redis.call('HMGET', KEYS[1], 'state', 'next_probe', 'probe', 'probe_until')
if c[1] ~= 'open' then return {'closed', 0} end
local next_probe = num(c[2])
if c[3] and num(c[4]) > now then
  return {'open', math.max(next_probe, num(c[4])) - now}
end
if now < next_probe then return {'open', next_probe - now} end
redis.call('HSET', KEYS[1], 'probe', ARGV[1], 'probe_until', now + tonumber(ARGV[2]))
-- A probe started: the job the sweeper released for it (if any) has been taken.
redis.call('HDEL', KEYS[1], 'released_at')
return {'probe', 0}
"""
)

# KEYS: circuit, stats. ARGV: now (ms) or '', stats field counting closings.
# The API answered (any answer but 5xx/408): close an open circuit, reset the failure count.
# Returns {closed now (1|0), ms the circuit was open}.
SUCCESS = (
    _CLOCK
    + """
local c = redis.call('HMGET', KEYS[1], 'state', 'failures', 'opened_at')
if c[1] == 'open' then
  local now = clock(ARGV[1])
  redis.call('DEL', KEYS[1])
  redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
  return {1, now - num(c[3])}
end
if num(c[2]) > 0 then redis.call('HSET', KEYS[1], 'failures', 0) end
return {0, 0}
"""
)

# KEYS: circuit, stats. ARGV: probe token ('' if the caller was not probing), threshold,
# window (ms), first probe interval (ms), max probe interval (ms), now (ms) or '',
# stats field counting openings.
# A transient failure. While closed it counts toward the threshold and may open the circuit;
# while open, the probe's own failure doubles the interval (a straggler's changes nothing).
# Returns {state after ('open'|'closed'), opened now (1|0), failures in a row, interval (ms)}.
FAILURE = (
    _CLOCK
    + """
local now = clock(ARGV[6])
local c = redis.call('HMGET', KEYS[1], 'state', 'failures', 'failed_at', 'interval', 'probe')
if c[1] == 'open' then
  local interval = num(c[4])
  if ARGV[1] ~= '' and c[5] == ARGV[1] then
    interval = math.min(interval * 2, tonumber(ARGV[5]))
    redis.call('HSET', KEYS[1], 'interval', interval, 'next_probe', now + interval)
    redis.call('HDEL', KEYS[1], 'probe', 'probe_until')
  end
  return {'open', 0, 0, interval}
end
local failures = num(c[2])
if now - num(c[3]) > tonumber(ARGV[3]) then failures = 0 end
failures = failures + 1
if failures >= tonumber(ARGV[2]) then
  local interval = tonumber(ARGV[4])
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now, 'failures', failures,
             'interval', interval, 'next_probe', now + interval)
  redis.call('HINCRBY', KEYS[2], ARGV[7], 1)
  return {'open', 1, failures, interval}
end
redis.call('HSET', KEYS[1], 'failures', failures, 'failed_at', now)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]) * 2)
return {'closed', 0, failures, 0}
"""
)

# KEYS: circuit. ARGV: probe token.
# The probe ended without an answer from the API (the limiter had no slot, Redis failed, no
# batch to send): give the turn back at once, so another caller may probe.
ABANDON = """
if redis.call('HGET', KEYS[1], 'probe') == ARGV[1] then
  redis.call('HDEL', KEYS[1], 'probe', 'probe_until')
  return 1
end
return 0
"""

# KEYS: delayed, then per bucket: circuit, parked (sorted set). ARGV: limit, probe grace (ms),
# now (ms) or ''.
# The sweeper's side, for every bucket in one call. Closed: move up to `limit` parked jobs to
# `delayed`, due now, so they drain at the limiter's rate. Open with a probe due and nobody
# probing: release the one longest-parked job to be the probe (at most once per grace, so one
# job, not a crowd, tries). Returns how many jobs were released.
RELEASE = (
    _CLOCK
    + """
local parked_sets = {}
for b = 3, #KEYS, 2 do parked_sets[#parked_sets + 1] = KEYS[b] end
if redis.call('EXISTS', unpack(parked_sets)) == 0 then return 0 end  -- the usual case: one read
local now = clock(ARGV[3])
local released = 0
for b = 2, #KEYS, 2 do
  local circuit, parked = KEYS[b], KEYS[b + 1]
  local c = redis.call('HMGET', circuit, 'state', 'next_probe', 'probe', 'probe_until',
                       'released_at')
  local limit = tonumber(ARGV[1])
  if c[1] == 'open' then
    limit = 0
    local probing = c[3] and num(c[4]) > now
    if now >= num(c[2]) and not probing and now - num(c[5]) >= tonumber(ARGV[2])
       and redis.call('ZCARD', parked) > 0 then
      limit = 1
      redis.call('HSET', circuit, 'released_at', now)
    end
  end
  if limit > 0 then
    local ids = redis.call('ZRANGE', parked, 0, limit - 1)
    for _, id in ipairs(ids) do
      redis.call('ZREM', parked, id)
      redis.call('ZADD', KEYS[1], now, id)
    end
    released = released + #ids
  end
end
return released
"""
)

# KEYS: circuit. ARGV: now (ms) or ''.
# {state, failures in a row, ms open, ms until the next probe, probe interval (ms), probing 1|0}
STATE = (
    _CLOCK
    + """
local now = clock(ARGV[1])
local c = redis.call('HMGET', KEYS[1], 'state', 'failures', 'opened_at', 'next_probe',
                     'interval', 'probe', 'probe_until')
if c[1] ~= 'open' then return {'closed', num(c[2]), 0, 0, 0, 0} end
local probing = 0
if c[6] and num(c[7]) > now then probing = 1 end
return {'open', num(c[2]), now - num(c[3]), math.max(0, num(c[4]) - now), num(c[5]), probing}
"""
)
