"""Lua for batched delivery (batch_queue.py explains the design; this is its Redis side).

Every change is one atomic script with Redis `TIME` (ms) as the clock. A shard is three keys:
its queue (job ids, LPUSH in, oldest at the right), its in-flight hash (the one batch being sent:
owner, lease_until, ids as JSON) and its hold key (no sending before this time). Job hashes are
`cio:job:<id>` with `job`, `item`, `kind`, `size`, `at` (enqueue ms), `attempts`.
"""

from __future__ import annotations

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: stats, then per job: its shard queue, its job key
# ARGV: count, stats field, then per job: id, job JSON, item JSON, kind, replace ('1'|'0')
ENQUEUE = (
    _NOW_MS
    + """
local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  local queue, job_key = KEYS[2 + 2 * i], KEYS[3 + 2 * i]
  local a = 3 + 5 * i
  if ARGV[a + 4] == '1' then redis.call('DEL', job_key) end
  redis.call('HSET', job_key, 'job', ARGV[a + 1], 'item', ARGV[a + 2], 'kind', ARGV[a + 3],
             'size', string.len(ARGV[a + 2]), 'at', now, 'attempts', 0, 'state', 'batched')
  redis.call('LPUSH', queue, ARGV[a])
end
redis.call('HINCRBY', KEYS[1], ARGV[2], n)
return n
"""
)

# KEYS: per shard (queue, inflight, hold), in the order to try them
# ARGV: owner, lease (ms), max body bytes, linger (ms), job key prefix, max ids to scan
# Finds the first shard with a batch ready to send and makes this owner its sender:
#   {'ok', shard position (0-based), id1, item1, attempts1, id2, ...}
#   {'none', ms until a held or lingering shard may be ready, or -1 if all are empty}
# A shard whose sender's lease ran out (the worker died) gets its jobs back at the front, in
# order, one attempt counted, before anything else is taken from it: order per shard holds.
POP = (
    _NOW_MS
    + """
local owner, lease, max_bytes = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local linger, prefix, max_scan = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
local soonest = -1
local function note(wait)
  if soonest < 0 or wait < soonest then soonest = wait end
end
for s = 0, #KEYS / 3 - 1 do
  local queue, inflight, hold = KEYS[3 * s + 1], KEYS[3 * s + 2], KEYS[3 * s + 3]
  local busy = false
  local holder = redis.call('HGET', inflight, 'owner')
  if holder then
    local until_ = tonumber(redis.call('HGET', inflight, 'lease_until') or '0')
    if until_ > now then
      busy = true
    else
      local ids = cjson.decode(redis.call('HGET', inflight, 'ids'))
      local lost = cjson.encode({reason = 'worker lost while delivering (lease expired)',
                                 at = now / 1000})
      for i = #ids, 1, -1 do
        local job_key = prefix .. ids[i]
        if redis.call('EXISTS', job_key) == 1 then
          redis.call('HINCRBY', job_key, 'attempts', 1)
          redis.call('HSET', job_key, 'last_error', lost)
          redis.call('RPUSH', queue, ids[i])
        end
      end
      redis.call('DEL', inflight)
    end
  end
  if not busy then
    local held = tonumber(redis.call('GET', hold) or '0')
    if held > now then
      note(held - now)
    else
      local n = redis.call('LLEN', queue)
      if n > 0 then
        local k = math.min(n, max_scan)
        local ids = redis.call('LRANGE', queue, -k, -1)
        local take, total, full = {}, 12, false
        for i = #ids, 1, -1 do
          local size = tonumber(redis.call('HGET', prefix .. ids[i], 'size') or '0')
          if #take > 0 and total + size + 1 > max_bytes then
            full = true
            break
          end
          total = total + size + 1
          take[#take + 1] = ids[i]
        end
        local wait = 0
        if not full and #take == n then
          local at = tonumber(redis.call('HGET', prefix .. take[1], 'at') or '0')
          wait = linger - (now - at)
        end
        if wait > 0 then
          note(wait)
        else
          if #take == n then
            redis.call('DEL', queue)
          else
            redis.call('LTRIM', queue, 0, n - #take - 1)
          end
          redis.call('HSET', inflight, 'owner', owner, 'lease_until', now + lease,
                     'ids', cjson.encode(take), 'at', now)
          local out = {'ok', s}
          for _, id in ipairs(take) do
            local job = redis.call('HMGET', prefix .. id, 'item', 'attempts')
            out[#out + 1] = id
            out[#out + 1] = job[1] or ''
            out[#out + 1] = job[2] or '0'
          end
          return out
        end
      end
    end
  end
end
return {'none', soonest}
"""
)

# KEYS: inflight, stats; ARGV: owner, job key prefix, stats field
# The batch was accepted: forget its jobs (those not dead-lettered meanwhile) and count them.
# Returns how many were delivered, or -1 if this owner no longer holds the shard.
COMPLETE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return -1 end
local ids = cjson.decode(redis.call('HGET', KEYS[1], 'ids'))
local delivered = 0
for _, id in ipairs(ids) do
  delivered = delivered + redis.call('DEL', ARGV[2] .. id)
end
redis.call('DEL', KEYS[1])
if delivered > 0 then redis.call('HINCRBY', KEYS[2], ARGV[3], delivered) end
return delivered
"""

# KEYS: queue, inflight, hold
# ARGV: owner, job key prefix, hold (ms), count an attempt ('1'|'0'), error JSON or ''
# The batch was not accepted: its jobs go back to the front of the shard in order, and nobody
# sends from the shard for `hold` ms (backoff, or a 429's pause), so a later job of the same
# person cannot overtake them. Returns how many went back, or -1 if the shard was lost.
RESTORE = (
    _NOW_MS
    + """
if redis.call('HGET', KEYS[2], 'owner') ~= ARGV[1] then return -1 end
local ids = cjson.decode(redis.call('HGET', KEYS[2], 'ids'))
local back = 0
for i = #ids, 1, -1 do
  local job_key = ARGV[2] .. ids[i]
  if redis.call('EXISTS', job_key) == 1 then
    if ARGV[4] == '1' then redis.call('HINCRBY', job_key, 'attempts', 1) end
    if ARGV[5] ~= '' then
      redis.call('HSETNX', job_key, 'first_error', ARGV[5])
      redis.call('HSET', job_key, 'last_error', ARGV[5])
    end
    redis.call('RPUSH', KEYS[1], ids[i])
    back = back + 1
  end
end
redis.call('DEL', KEYS[2])
local hold_ms = tonumber(ARGV[3])
if hold_ms > 0 then
  local until_ = math.max(now + hold_ms, tonumber(redis.call('GET', KEYS[3]) or '0'))
  redis.call('SET', KEYS[3], until_, 'PX', until_ - now + 1000)
end
return back
"""
)
