"""The job ledger's Lua scripts: every change of a job's state is one atomic script.

Kept apart from _ledger.py so the state machine reads as Python there and as Redis here. All
times are Redis `TIME` in milliseconds, so hosts whose clocks disagree still agree on leases and
due times. A job's hash (keys.job) holds `job` (JSON), `kind`, `attempts`, `state`
(queued | running | delayed), `seq`, and while running `owner` and `lease_until`; a replayed
job also `requeued_at` (Unix seconds), where its retry budget starts again.
"""

from __future__ import annotations

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Push a job's task message onto its family's queue and index it as unclaimed under a fresh
# sequence number (the queue is FIFO, so seq order is pop order: see _sweeper.py).
_PUSH = """
local function push(job_key, queue, unclaimed, seq_key, job_id, message)
  local seq = redis.call('INCR', seq_key)
  redis.call('HSET', job_key, 'state', 'queued', 'seq', seq)
  redis.call('HDEL', job_key, 'owner', 'lease_until', 'stray_since')
  redis.call('ZADD', unclaimed, seq, job_id)
  redis.call('LPUSH', queue, message)
  return seq
end
"""

# KEYS: job, queue, unclaimed, seq, stats
# ARGV: job id, job JSON, kind, task message, stats field, replace ('1' = drop any old record)
ENQUEUE = (
    _PUSH
    + """
if ARGV[6] == '1' then redis.call('DEL', KEYS[1]) end
redis.call('HSET', KEYS[1], 'job', ARGV[2], 'kind', ARGV[3], 'attempts', 0)
-- A replay starts the retry budget (CIO_WORKER_RETRY_FOR_S) again from now.
if ARGV[6] == '1' then redis.call('HSET', KEYS[1], 'requeued_at', redis.call('TIME')[1]) end
push(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[4])
redis.call('HINCRBY', KEYS[5], ARGV[5], 1)
return 1
"""
)

# KEYS: job, leases, unclaimed, claimed seq
# ARGV: job id, owner, lease length (ms)
# Returns {outcome, attempts}; outcome is
#   ok       the caller owns the job until lease_until (renewed by its heartbeat)
#   gone     the job ended (delivered or dead-lettered): a redelivered message, send nothing
#   busy     another live worker holds it: this message is a duplicate
#   delayed  it waits in keys.delayed for its due time: this message is a duplicate
# A claim that takes over an expired lease counts the lost attempt (the holder died mid-job).
CLAIM = (
    _NOW_MS
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return {'gone', 0} end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'delayed' then return {'delayed', 0} end
if state == 'running' then
  local lease = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0')
  if lease > now and redis.call('HGET', KEYS[1], 'owner') ~= ARGV[2] then
    return {'busy', 0}
  end
  if lease <= now then
    redis.call('HINCRBY', KEYS[1], 'attempts', 1)
    redis.call('HSET', KEYS[1], 'last_error', cjson.encode({
      reason = 'worker lost while delivering (lease expired)', at = now / 1000}))
  end
end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
redis.call('ZREM', KEYS[3], ARGV[1])
if seq > tonumber(redis.call('GET', KEYS[4]) or '0') then redis.call('SET', KEYS[4], seq) end
local until_ = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'state', 'running', 'owner', ARGV[2], 'lease_until', until_)
redis.call('HDEL', KEYS[1], 'stray_since')
redis.call('ZADD', KEYS[2], until_, ARGV[1])
return {'ok', tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')}
"""
)

# KEYS: leases; ARGV: owner, lease length (ms), then job ids (each job key is `ARGV[3+]`'s key
# passed in KEYS[2+] in the same order). Renews the leases this owner still holds.
HEARTBEAT = (
    _NOW_MS
    + """
local until_ = now + tonumber(ARGV[2])
local renewed = 0
for i = 3, #ARGV do
  local job_key = KEYS[i - 1]
  if redis.call('HGET', job_key, 'owner') == ARGV[1]
     and redis.call('HGET', job_key, 'state') == 'running' then
    redis.call('HSET', job_key, 'lease_until', until_)
    redis.call('ZADD', KEYS[1], until_, ARGV[i])
    renewed = renewed + 1
  end
end
return renewed
"""
)

# KEYS: job, leases, delayed; ARGV: job id, delay (ms), owner, keep the `sending` mark ('1'|'')
# Park a claimed job in keys.delayed until now + delay; the mover re-queues it then. The mark
# that a message may be on its way stays only when reconciliation will look for it.
DEFER = (
    _NOW_MS
    + """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local owner = redis.call('HGET', KEYS[1], 'owner')
if owner and owner ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'delayed')
redis.call('HDEL', KEYS[1], 'owner', 'lease_until')
if ARGV[4] ~= '1' then redis.call('HDEL', KEYS[1], 'sending') end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[1])
return 1
"""
)

# KEYS: job, leases, unclaimed, delayed, stats[, receipts, receipt index, receipt owners]
# ARGV: job id, stats field[, receipt JSON, `<family>:<remote id>`, now (Unix s)]
# The job was accepted by Customer.io: forget it and every index entry, and count it.
COMPLETE = """
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
redis.call('HINCRBY', KEYS[5], ARGV[2], 1)
if ARGV[3] then
  -- A message's receipt (_receipts.py), kept with the job's end in one step: a delivery id is
  -- never recorded for a job that is still pending, nor a job ended without its receipt.
  redis.call('HSET', KEYS[6], ARGV[1], ARGV[3])
  redis.call('ZADD', KEYS[7], ARGV[5], ARGV[1])
  redis.call('HSET', KEYS[8], ARGV[4], ARGV[1])
end
return 1
"""

# KEYS: a sorted set scored by Unix ms (keys.delayed or keys.leases); ARGV: limit, the job hash
# key's prefix (keys.job(""): keys are built in keys.py only, the script appends the id).
# The job ids whose time has come (a due retry, an expired lease), each with its kind, so the
# caller can build the task message to push again.
RIPE = (
    _NOW_MS
    + """
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local out = {}
for _, id in ipairs(ids) do
  out[#out + 1] = id
  out[#out + 1] = redis.call('HGET', ARGV[2] .. id, 'kind') or ''
end
return out
"""
)

# KEYS: unclaimed, claimed seq, queue; ARGV: grace (ms), limit, the job hash key's prefix
# Jobs whose message left the queue (FIFO: a later one was claimed, or the queue is empty) yet
# nobody claimed them. The first sweep marks them; those still unclaimed `grace` later are
# returned (id, kind, seq) for re-pushing. See _sweeper.py for why this finds every lost message.
STRAYS = (
    _NOW_MS
    + """
local ceiling = tonumber(redis.call('GET', KEYS[2]) or '0')
if redis.call('LLEN', KEYS[3]) == 0 then ceiling = '+inf' end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ceiling, 'WITHSCORES',
                       'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for i = 1, #ids, 2 do
  local id = ids[i]
  local job_key = ARGV[3] .. id
  if redis.call('EXISTS', job_key) == 0 then
    redis.call('ZREM', KEYS[1], id)
  else
    redis.call('HSETNX', job_key, 'stray_since', now)
    local since = tonumber(redis.call('HGET', job_key, 'stray_since'))
    if now - since >= tonumber(ARGV[1]) then
      out[#out + 1] = id
      out[#out + 1] = redis.call('HGET', job_key, 'kind') or ''
      out[#out + 1] = ids[i + 1]
    end
  end
end
return out
"""
)

# KEYS: job, queue, unclaimed, seq, delayed, leases
# ARGV: job id, task message, reason ('due' | 'lease' | 'stray'), expected seq (stray only)
# Re-push a job whose due time came, whose worker died (lease expired), or whose message was
# lost (stray), only if it is still in that condition: concurrent sweepers push it once.
# A lost lease counts as an attempt; returns {'pushed'|'skip', attempts}.
REQUEUE = (
    _NOW_MS
    + _PUSH
    + """
local why = ARGV[3]
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('ZREM', KEYS[6], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  return {'skip', 0}
end
if why == 'due' then
  if redis.call('ZREM', KEYS[5], ARGV[1]) == 0 then return {'skip', 0} end
elseif why == 'lease' then
  local lease = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0')
  if redis.call('HGET', KEYS[1], 'state') ~= 'running' or lease > now then
    redis.call('ZREM', KEYS[6], ARGV[1])
    if redis.call('HGET', KEYS[1], 'state') == 'running' then
      redis.call('ZADD', KEYS[6], lease, ARGV[1])
    end
    return {'skip', 0}
  end
  redis.call('ZREM', KEYS[6], ARGV[1])
  -- The holder died mid-job: that was an attempt. The next claim dead-letters the job once
  -- attempts run out, so a job that kills its worker every time is not looped forever.
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('HSET', KEYS[1], 'last_error', cjson.encode({
    reason = 'worker lost while delivering (lease expired)', at = now / 1000}))
else
  local score = redis.call('ZSCORE', KEYS[3], ARGV[1])
  if redis.call('HGET', KEYS[1], 'state') ~= 'queued'
     or not score or tonumber(score) ~= tonumber(ARGV[4]) then
    return {'skip', 0}
  end
end
push(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2])
return {'pushed', tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')}
"""
)
