"""The webhook store's Lua script (webhooks/_store.py explains the store; this is its Redis side).

What it keeps: an event_id is appended to the stream at most once while its seen-marker lives
(DEDUP_TTL_S, longer than Customer.io retries), and never marked seen without being stored. Its
keys share the `{webhooks}` hash tag (keys.py), so a cluster runs it in one slot.
"""

from __future__ import annotations

# KEYS[1] = seen marker of the event_id, KEYS[2] = stream; ARGV[1] = marker TTL (s), ARGV[2] =
# retention (ms), ARGV[3..] = the entry's field/value pairs. Returns the new entry's id, or false
# if the event_id was stored already. XADD comes before the marker: if Redis refuses a write
# half-way, the worst case is an event stored twice (at least once), never an event marked seen
# but not stored. Then entries older than the retention are trimmed, measured from the new entry's
# id (Redis's clock, not this host's); `~` drops only whole stream nodes, so it costs next to
# nothing per append and keeps the stream bounded however long nobody reads it.
APPEND = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return false
end
local id = redis.call('XADD', KEYS[2], '*', unpack(ARGV, 3))
redis.call('SET', KEYS[1], id, 'EX', ARGV[1])
local ms = tonumber(string.match(id, '^(%d+)-'))
local oldest = ms - tonumber(ARGV[2])
if oldest > 0 then
  redis.call('XTRIM', KEYS[2], 'MINID', '~', string.format('%d', oldest))
end
return id
"""
