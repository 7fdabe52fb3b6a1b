"""The job ledger's Lua scripts: every change of a job's state is one atomic script.

Kept apart from _ledger.py so the state machine reads as Python there and as Redis here. All
times are Redis `TIME` in milliseconds, so hosts whose clocks disagree still agree on leases and
due times. A job's hash (keys.job) holds `job` (JSON), `kind`, `attempts`, `state`
(queued | running | delayed), and while running `owner` and `lease_until`; a replayed job also
`requeued_at` (Unix seconds), where its retry budget starts again. A queued job's push sequence
number is its score in keys.unclaimed, kept nowhere else (a hash field would cost a queued email
about 100 bytes: the job JSON makes the hash a real hash table, where each field costs that).

A job beyond its family's window (queue/_window.py) *waits*: its hash is only `state` (waiting),
`kind` and `attempts` (a listpack of about 100 bytes), its record (`Job.record_json`) is a field
of keys.records(family) and its id is in the FIFO list keys.waiting(family). `release` gives it
its task message when the queue has room again; nothing else ever sees it.
"""

from __future__ import annotations

from cio_worker.queue._bells import ring_lua
from cio_worker.queue._window import ENQUEUE_SLICE, RELEASE_LUA

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Push a job's task message onto its family's queue and index it as unclaimed under a fresh
# sequence number (the queue is FIFO, so seq order is pop order: see _sweeper.py).
_PUSH = """
local function push(job_key, queue, unclaimed, seq_key, job_id, message)
  local seq = redis.call('INCR', seq_key)
  redis.call('HSET', job_key, 'state', 'queued')
  redis.call('HDEL', job_key, 'owner', 'lease_until', 'stray_since')
  redis.call('ZADD', unclaimed, seq, job_id)
  redis.call('LPUSH', queue, message)
  return seq
end
"""

# KEYS: queue, unclaimed, seq, waiting, records, stats
# ARGV: the window (ARGV[1..9], _window.window_args), stats field, replace ('1' = drop any
#       old record), the jobs' kinds (separated by spaces), then per job: id, record
#       (`Job.record_json`). Each job's hash key is the window's job key prefix and its id, as
#       `release` builds it.
# Stores jobs of one family (attempts 0). While none of the family waits and its queue is
# shorter than the window, a job is pushed as `push` does, in a few commands per call rather
# than per job: one INCRBY takes the jobs' sequence numbers, the messages go in ascending seq
# order (so seq order stays pop order) by one LPUSH per slice, and the unclaimed index by one
# ZADD per slice. The rest wait, in the order given, behind any job of the family waiting
# already (a job never overtakes an older one); waiting jobs are released first if there is room.
ENQUEUE = (
    RELEASE_LUA
    + f"""
local q = window(1, 1)
local replace = ARGV[11] == '1'
local kinds = {{}}
for kind in string.gmatch(ARGV[12], '%S+') do kinds[#kinds + 1] = kind end
local count = #kinds
if #ARGV ~= 12 + 2 * count then
  return redis.error_reply('ENQUEUE: ' .. count .. ' kinds for ' .. (#ARGV - 12) .. ' arguments')
end
if redis.call('EXISTS', q.waiting) == 1 then release(q, q.window) end
local direct = 0
if redis.call('EXISTS', q.waiting) == 0 then
  direct = math.min(count, math.max(0, q.window - redis.call('LLEN', q.queue)))
end
local first = direct > 0 and redis.call('INCRBY', q.seq, direct) - direct or 0
local requeued_at = replace and redis.call('TIME')[1] or nil
-- `pending`: how many waiting jobs `records` holds (id, record, ...), counted rather than
-- measured with `#` on every job. '0' for attempts: a Lua number is formatted by snprintf.
local scores, messages, records, pending = {{}}, {{}}, {{}}, 0
for i = 1, count do
  local id, record, kind = ARGV[11 + 2 * i], ARGV[12 + 2 * i], kinds[i]
  local job_key = q.prefix .. id
  if replace then redis.call('DEL', job_key) end
  local added
  if i <= direct then
    added = redis.call('HSET', job_key, 'job', with_id(id, record), 'kind', kind,
                       'attempts', '0', 'state', 'queued') + 1
    scores[#scores + 1] = first + i
    scores[#scores + 1] = id
    messages[#messages + 1] = message(id, kind, q.family .. '.' .. (first + i), q.parts)
  else
    added = redis.call('HSET', job_key, 'state', 'waiting', 'kind', kind, 'attempts', '0') + 2
    records[2 * pending + 1], records[2 * pending + 2] = id, record
    pending = pending + 1
  end
  if replace then
    -- A replay starts the retry budget (CIO_WORKER_RETRY_FOR_S) again from now.
    redis.call('HSET', job_key, 'requeued_at', requeued_at)
  elseif added < 5 then
    -- The job was stored already (every record has these fields): as `push` does, it starts
    -- over. A new job (the usual case) needs no second command.
    redis.call('HDEL', job_key, 'owner', 'lease_until', 'stray_since')
    if i > direct then redis.call('HDEL', job_key, 'job') end
  end
  if #messages == {ENQUEUE_SLICE} or (i == direct and #messages > 0) then
    redis.call('ZADD', q.unclaimed, unpack(scores))
    redis.call('LPUSH', q.queue, unpack(messages))
    scores, messages = {{}}, {{}}
  end
  if pending == {ENQUEUE_SLICE} or (i == count and pending > 0) then
    -- The records of a slice of waiting jobs in one HSET. A job waiting already keeps its
    -- place (only its record changes): an id joins the waiting list only if the records hash
    -- did not hold it before, nor did an earlier job of this slice (as an HSET each would say).
    local ids, seen = {{}}, {{}}
    for j = 1, #records, 2 do ids[#ids + 1] = records[j] end
    local held = redis.call('HMGET', q.records, unpack(ids))
    redis.call('HSET', q.records, unpack(records))
    local new = {{}}
    for j, id in ipairs(ids) do
      if not held[j] and not seen[id] then new[#new + 1] = id end
      seen[id] = true
    end
    if #new > 0 then redis.call('RPUSH', q.waiting, unpack(new)) end
    records, pending = {{}}, 0
  end
end
redis.call('HINCRBY', KEYS[6], ARGV[10], count)
return count
"""
)

# KEYS: job, leases, then the window's keys (queue, unclaimed, seq, waiting, records), claimed
#       seq
# ARGV: the window (ARGV[1..9], _window.window_args), job id, owner, lease length (ms), how many
#       waiting jobs to release at most
# Returns {outcome, attempts}; outcome is
#   ok       the caller owns the job until lease_until (renewed by its heartbeat)
#   gone     the job ended (delivered or dead-lettered): a redelivered message, send nothing
#   busy     another live worker holds it: this message is a duplicate
#   delayed  it waits in keys.delayed for its due time, or in keys.waiting for room in its
#            queue: this message is a duplicate
# A claim that takes over an expired lease counts the lost attempt (the holder died mid-job).
# Whatever the outcome, a message left the queue: the claim first releases waiting jobs into
# the room it made (queue/_window.py).
CLAIM = (
    _NOW_MS
    + RELEASE_LUA
    + """
local q = window(3, 1)
release(q, tonumber(ARGV[13]))
local id = ARGV[10]
if redis.call('EXISTS', KEYS[1]) == 0 then return {'gone', 0} end
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'delayed' or state == 'waiting' then return {'delayed', 0} end
if state == 'running' then
  local lease = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0')
  if lease > now and redis.call('HGET', KEYS[1], 'owner') ~= ARGV[11] then
    return {'busy', 0}
  end
  if lease <= now then
    redis.call('HINCRBY', KEYS[1], 'attempts', 1)
    redis.call('HSET', KEYS[1], 'last_error', cjson.encode({
      reason = 'worker lost while delivering (lease expired)', at = now / 1000}))
  end
end
local seq = tonumber(redis.call('ZSCORE', q.unclaimed, id) or '0')
redis.call('ZREM', q.unclaimed, id)
if seq > tonumber(redis.call('GET', KEYS[8]) or '0') then redis.call('SET', KEYS[8], seq) end
local until_ = now + tonumber(ARGV[12])
redis.call('HSET', KEYS[1], 'state', 'running', 'owner', ARGV[11], 'lease_until', until_)
redis.call('HDEL', KEYS[1], 'stray_since')
redis.call('ZADD', KEYS[2], until_, id)
return {'ok', tonumber(redis.call('HGET', KEYS[1], 'attempts') or '0')}
"""
)

# KEYS: the window's keys (queue, unclaimed, seq, waiting, records)
# ARGV: the window (ARGV[1..9], _window.window_args)
# The sweeper's top-up of a queue left short while jobs wait (_sweeper.py). Returns how many.
RELEASE = (
    RELEASE_LUA
    + """
local q = window(1, 1)
return release(q, q.window)
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

# KEYS: job, leases, delayed (or a parked set), the due bell
# ARGV: job id, delay (ms), owner, keep the `sending` mark ('1'|'')
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
"""
    # A sweeper asleep until a later due time (or with nothing parked) looks again now.
    + ring_lua(4)
    + """
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
