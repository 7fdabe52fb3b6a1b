"""Lua for batched delivery (_shards.py explains the design; this is its Redis side).

Every change is one atomic script with Redis `TIME` (ms) as the clock. A shard `<base>` is:
- `<base>`: list of job ids, LPUSH in, oldest at the right;
- `<base>:jobs`: hash id -> the job's record (`Job.record_json`: kind and payload, no id). The
  sender builds each batch item from it (customerio/_batch_items.py); storing the ready item as
  well, as layout 1 did, doubled the bytes of every queued event (issue 18);
- `<base>:meta`: `<id>:attempts`, `<id>:first_error`, `<id>:last_error`, only after a failure,
  and `<id>:since` (Unix s) for a replayed job, whose retry budget starts there;
- `<base>:inflight`: the one batch being sent (owner, lease_until, ids as JSON);
- `<base>:suspects`: ids of a batch whose sender died; each is sent alone until it goes through,
  so a job that kills its worker (a poison job) runs out of attempts alone, not with its batch;
- `<base>:hold`: no sending before this time (ms).
Jobs live in per-shard hashes, not one hash each, so a bulk write of a thousand jobs is two
variadic commands per shard (`_shards.queue_enqueue`) instead of two thousand.
"""

from __future__ import annotations

from cio_worker.queue._bells import ring_lua

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Variadic commands with any number of arguments (Lua's unpack has a stack limit).
_CHUNKED = """
local function chunked(command, key, values, step)
  local total = 0
  for i = 1, #values, step do
    total = total + redis.call(command, key, unpack(values, i, math.min(i + step - 1, #values)))
  end
  return total
end
"""

# A batch whose sender's lease ran out (the worker died) goes back to the front of its shard, in
# order, one attempt counted, its jobs suspects: each is sent alone next, so a job that kills its
# sender runs out of attempts alone. Needs `now` (_NOW_MS).
_RECOVER_LOST = """
local function recover_lost(inflight, queue, jobs, meta, suspects)
  local ids = cjson.decode(redis.call('HGET', inflight, 'ids'))
  local lost = cjson.encode({reason = 'worker lost while delivering (lease expired)',
                             at = now / 1000})
  for i = #ids, 1, -1 do
    if redis.call('HEXISTS', jobs, ids[i]) == 1 then
      redis.call('HINCRBY', meta, ids[i] .. ':attempts', 1)
      redis.call('HSETNX', meta, ids[i] .. ':first_error', lost)
      redis.call('HSET', meta, ids[i] .. ':last_error', lost)
      redis.call('SADD', suspects, ids[i])
      redis.call('RPUSH', queue, ids[i])
    end
  end
  redis.call('DEL', inflight)
end
"""

# The millisecond time inside a ULID (its first 10 Crockford base32 digits).
_ULID_MS = """
local CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'
local function ulid_ms(id)
  local value = 0
  for i = 1, 10 do
    local digit = string.find(CROCKFORD, string.sub(id, i, i), 1, true)
    if not digit then return 0 end
    value = value * 32 + digit - 1
  end
  return value
end
"""

# KEYS: per shard (queue, inflight, hold, jobs, meta, suspects), in the order to try them
# ARGV: owner, lease (ms), max body bytes, linger (ms), max ids to scan, bytes to add per item,
#       bytes at which a partial batch goes without lingering
# Finds the first shard with a batch ready to send and makes this owner its sender:
#   {'ok', shard position (0-based), ids as a JSON array, records joined by NUL ('' for one gone
#   meanwhile; NUL never occurs in JSON text), {attempts, ...} or {} if none of the shard's jobs
#   ever failed}, all oldest first. Two strings rather than three reply elements a job, and ids
#   read 500 at a time until the batch is full rather than `max_scan` at once: a take went from
#   about 3.5 to 2.6 µs of Redis time a job (2,000-job batches).
#   {'none', ms until a held, lingering or leased shard may be ready, or -1 if all are empty}
# A batch is bounded by its records' bytes plus ARGV[6] per item, how much longer than its
# record an item is (customerio/_batch_items.py ITEM_SLACK_BYTES: a bound on Track v2; on
# Pipelines a page's item may outgrow it, and its sender trims the body: worker/_batch_fit.py).
# With every shard empty, the answer costs one EXISTS: idle senders ask this every few seconds.
# A shard whose sender's lease ran out (the worker died) gets its jobs back at the front, in
# order, one attempt counted, before anything else is taken from it: order per shard holds.
POP = (
    """
local watched = {}
for s = 0, #KEYS / 6 - 1 do
  watched[#watched + 1] = KEYS[6 * s + 1]
  watched[#watched + 1] = KEYS[6 * s + 2]
  watched[#watched + 1] = KEYS[6 * s + 3]
end
if redis.call('EXISTS', unpack(watched)) == 0 then return {'none', -1} end
"""
    + _NOW_MS
    + _RECOVER_LOST
    + _ULID_MS
    + """
local owner, lease, max_bytes = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local linger, max_scan, slack = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local eager = tonumber(ARGV[7])
local soonest = -1
local function note(wait)
  if soonest < 0 or wait < soonest then soonest = wait end
end
for s = 0, #KEYS / 6 - 1 do
  local queue, inflight, hold = KEYS[6 * s + 1], KEYS[6 * s + 2], KEYS[6 * s + 3]
  local jobs, meta, suspects = KEYS[6 * s + 4], KEYS[6 * s + 5], KEYS[6 * s + 6]
  local busy = false
  if redis.call('HGET', inflight, 'owner') then
    local until_ = tonumber(redis.call('HGET', inflight, 'lease_until') or '0')
    if until_ > now then
      busy = true
      note(until_ - now)  -- if its sender dies, the batch is back then
    else
      recover_lost(inflight, queue, jobs, meta, suspects)
    end
  end
  if not busy then
    local held = tonumber(redis.call('GET', hold) or '0')
    if held > now then
      note(held - now)
    else
      local n = redis.call('LLEN', queue)
      if n > 0 then
        -- A suspect goes alone: the oldest job's batch died with its sender, maybe because of it.
        local solo = redis.call('SISMEMBER', suspects, redis.call('LINDEX', queue, -1)) == 1
        local limit = solo and 1 or math.min(n, max_scan)
        -- Oldest first, 500 ids a read from the right end, until the batch is full: a full
        -- batch of small events is about 2,500 of the up to `max_scan` ids looked at.
        local take, bodies, count, total, full, read = {}, {}, 0, 12, false, 0
        while read < limit and not full do
          local m = math.min(500, limit - read)
          local chunk = redis.call('LRANGE', queue, -(read + m), -(read + 1))
          local found = redis.call('HMGET', jobs, unpack(chunk))
          for j = #chunk, 1, -1 do
            local body = found[j] or ''
            local size = #body + slack + 1
            if count > 0 and total + size > max_bytes then
              full = true
              break
            end
            total = total + size
            count = count + 1
            take[count] = chunk[j]
            bodies[count] = body
          end
          read = read + m
        end
        local wait = 0
        if not full and count == n and not solo and total < eager then
          wait = math.min(linger, linger - (now - ulid_ms(take[1])))
        end
        if wait > 0 then
          note(wait)
        else
          if count == n then
            redis.call('DEL', queue)
          else
            redis.call('LTRIM', queue, 0, n - count - 1)
          end
          local ids = cjson.encode(take)
          redis.call('HSET', inflight, 'owner', owner, 'lease_until', now + lease, 'ids', ids,
                     'at', now)
          -- Attempts only if a job of this shard ever failed (else every one is 0: none sent).
          local attempts = {}
          if redis.call('EXISTS', meta) == 1 then
            for j = 1, count, 500 do
              local fields = {}
              for m = j, math.min(j + 499, count) do
                fields[m - j + 1] = take[m] .. ':attempts'
              end
              local got = redis.call('HMGET', meta, unpack(fields))
              for m = 1, #got do attempts[j + m - 1] = got[m] or '0' end
            end
          end
          return {'ok', s, ids, table.concat(bodies, '\0'), attempts}
        end
      end
    end
  end
end
return {'none', soonest}
"""
)

# KEYS: inflight, stats, jobs, meta, suspects; ARGV: owner, stats field
# The batch was accepted: forget its jobs (those not dead-lettered meanwhile) and count them.
# Returns how many were delivered, or -1 if this owner no longer holds the shard.
COMPLETE = (
    _CHUNKED
    + """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return -1 end
local ids = cjson.decode(redis.call('HGET', KEYS[1], 'ids'))
local delivered = chunked('HDEL', KEYS[3], ids, 4000)
if redis.call('EXISTS', KEYS[4]) == 1 then  -- usually none of them ever failed: nothing to drop
  local fields = {}
  for _, id in ipairs(ids) do
    fields[#fields + 1] = id .. ':attempts'
    fields[#fields + 1] = id .. ':first_error'
    fields[#fields + 1] = id .. ':last_error'
    fields[#fields + 1] = id .. ':since'
  end
  chunked('HDEL', KEYS[4], fields, 3000)
end
if redis.call('EXISTS', KEYS[5]) == 1 then chunked('SREM', KEYS[5], ids, 4000) end
redis.call('DEL', KEYS[1])
if delivered > 0 then redis.call('HINCRBY', KEYS[2], ARGV[2], delivered) end
return delivered
"""
)

# KEYS: queue, inflight, hold, jobs, meta, suspects
# ARGV: owner, hold (ms), count an attempt ('1'|'0'), error JSON or '', split ('1'|'0'),
#       keep (how many of the oldest stay in flight; '0' for none)
# The batch was not accepted: its jobs go back to the front of the shard in order, and nobody
# sends from the shard for `hold` ms (backoff, or a 429's pause), so a later job of the same
# person cannot overtake them. `split` marks them suspects: each is next sent alone, where a
# failure is its own (worker/_fate.py). With `keep` > 0 only the jobs after the first `keep` go
# back and the owner goes on sending those it kept (a body over the request limit, trimmed):
# they are still the shard's oldest, so order holds (no hold then: the shard is still in
# flight). Returns how many went back, or -1 if the shard was lost.
RESTORE = (
    _NOW_MS
    + """
if redis.call('HGET', KEYS[2], 'owner') ~= ARGV[1] then return -1 end
local ids = cjson.decode(redis.call('HGET', KEYS[2], 'ids'))
local keep = tonumber(ARGV[6])
local back = 0
for i = #ids, keep + 1, -1 do
  local id = ids[i]
  if redis.call('HEXISTS', KEYS[4], id) == 1 then
    if ARGV[3] == '1' then redis.call('HINCRBY', KEYS[5], id .. ':attempts', 1) end
    if ARGV[4] ~= '' then
      redis.call('HSETNX', KEYS[5], id .. ':first_error', ARGV[4])
      redis.call('HSET', KEYS[5], id .. ':last_error', ARGV[4])
    end
    if ARGV[5] == '1' then redis.call('SADD', KEYS[6], id) end
    redis.call('RPUSH', KEYS[1], id)
    back = back + 1
  end
end
if keep > 0 then
  local kept = {}
  for i = 1, math.min(keep, #ids) do kept[i] = ids[i] end
  redis.call('HSET', KEYS[2], 'ids', cjson.encode(kept))
  return back
end
redis.call('DEL', KEYS[2])
local hold_ms = tonumber(ARGV[2])
if hold_ms > 0 then
  local until_ = math.max(now + hold_ms, tonumber(redis.call('GET', KEYS[3]) or '0'))
  redis.call('SET', KEYS[3], until_, 'PX', until_ - now + 1000)
end
return back
"""
)

# KEYS: layout 1's shard (queue, inflight, hold, jobs, items, meta, suspects), then layout 2's
#       (queue, hold, jobs, meta, suspects) and its bell
# ARGV: most ids to move, hold (ms) of the layout 2 shard while more remain
# Moves queued jobs of layout 1 (before issue 18: keys.legacy_batch_shard) into layout 2, the
# newest first: each lands at the oldest end of the new list, behind every job written since, so
# the shard's order holds. While more remain, the new shard is held: nobody sends a job of it
# before the older ones still waiting in layout 1. A batch in flight under a live lease (a worker
# of layout 1 still sending) is left alone: -1, try later. Its sender died: its jobs go back as
# the oldest, one attempt counted, as POP does. Returns how many moved.
ADOPT = (
    _NOW_MS
    + _RECOVER_LOST
    + """
local lq, linf, lhold, ljobs, litems = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local lmeta, lsus = KEYS[6], KEYS[7]
local nq, nhold, njobs, nmeta, nsus, bell = KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[13]
local META = {':attempts', ':first_error', ':last_error', ':since'}
if redis.call('HGET', linf, 'owner') then
  if tonumber(redis.call('HGET', linf, 'lease_until') or '0') > now then return -1 end
  recover_lost(linf, lq, ljobs, lmeta, lsus)
end
local n = redis.call('LLEN', lq)
local k = math.min(n, tonumber(ARGV[1]))
local moved = 0
if k > 0 then
  local ids = redis.call('LRANGE', lq, 0, k - 1)
  for _, id in ipairs(ids) do
    local job = redis.call('HGET', ljobs, id)
    if job then
      redis.call('RPUSH', nq, id)
      redis.call('HSET', njobs, id, job)
      for _, part in ipairs(META) do
        local value = redis.call('HGET', lmeta, id .. part)
        if value then redis.call('HSET', nmeta, id .. part, value) end
      end
      if redis.call('SISMEMBER', lsus, id) == 1 then redis.call('SADD', nsus, id) end
      moved = moved + 1
    end
    redis.call('HDEL', ljobs, id)
    redis.call('HDEL', litems, id)
    redis.call('HDEL', lmeta, id .. META[1], id .. META[2], id .. META[3], id .. META[4])
    redis.call('SREM', lsus, id)
  end
  redis.call('LTRIM', lq, k, -1)
end
local held = tonumber(redis.call('GET', lhold) or '0')
if k < n then held = math.max(held, now + tonumber(ARGV[2])) end
if held > now then
  local until_ = math.max(held, tonumber(redis.call('GET', nhold) or '0'))
  redis.call('SET', nhold, until_, 'PX', until_ - now + 1000)
end
if k == n then redis.call('DEL', lq, lhold, ljobs, litems, lmeta, lsus) end
if moved > 0 then
"""
    + ring_lua(13)
    + """
end
return moved
"""
)
