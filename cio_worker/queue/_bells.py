"""Doorbells: idle workers wait for work in Redis instead of polling it (issue 18).

An idle batch sender used to look at every shard 20 times a second, and the sweeper at the due
set 5 times a second: about 2,000 Redis commands a second per idle worker, 200,000 for a fleet
of a hundred. Now whoever makes work ready rings a bell, and an idle waiter blocks on it.

A bell is a Redis list holding at most one token. A ring is `LPUSH` + `LTRIM 0 0`, in the same
transaction or script as the write it announces (`ring`, `RING_LUA`); a waiter blocks in
`BLPOP` with a timeout (`Doorbell.wait`). Why this and not the alternatives:

- **One ring wakes one waiter.** Redis hands a pushed token to the longest-blocked client, so a
  lone event wakes one sender of a hundred idle workers. Pub/Sub would deliver every ring to
  every subscriber: a hundred wake-ups per single enqueue.
- **No lost wake-up.** A ring nobody waits for leaves its token, so a waiter that was busy
  between "found nothing" and "started waiting" finds the token and looks again at once.
- **Nothing to configure.** Keyspace notifications need `notify-keyspace-events` on the
  server (many managed Redis forbid CONFIG), and are fire-and-forget.
- **Bounded.** The list never holds more than one token, however many rings go unanswered.

A bell is a hint, never the only path to work: every waiter also wakes after its timeout and
looks (`IDLE_WAIT_S`): the catch-all for a ring lost in a failover, a dead sender's lease
running out, or a writer of an older version. Each waiter also listens on its process's
private stop key, so a shutdown wakes it at once (`Doorbell.wake`).
"""

from __future__ import annotations

import threading
from typing import Any

import redis

from cio_worker import keys, logs
from cio_worker.config import Settings
from cio_worker.connection import create_redis

#: Longest an idle waiter sleeps without a ring before it looks anyway. Every idle sender and
#: sweeper spends about three Redis commands per wake-up, so this sets the idle cost (about one
#: command a second per worker) and bounds how late work that rang no bell is found.
IDLE_WAIT_S = 5.0
#: BLPOP's shortest timeout: 0 would mean "forever".
_MIN_WAIT_S = 0.01

log = logs.get_logger(__name__)

#: Lua that rings the bell named by `KEYS[n]` (`n` substituted by `ring_lua`).
_RING_LUA = "redis.call('LPUSH', KEYS[{n}], '1')\nredis.call('LTRIM', KEYS[{n}], 0, 0)\n"


def batch_bell(api: str) -> str:
    """The bell of batched delivery to `api` (rung by every write to its shards)."""
    return keys.bell(f"batch:{api}")


def due_bell() -> str:
    """The bell of the due set (rung when a job is delayed or made due now)."""
    return keys.bell("due")


def ring(pipe: Any, bell: str) -> None:
    """Queue a ring of `bell` on `pipe` (a MULTI pipeline, sync or asyncio)."""
    pipe.lpush(bell, 1)
    pipe.ltrim(bell, 0, 0)


def ring_lua(key_index: int) -> str:
    """Lua lines ringing the bell passed as `KEYS[key_index]` (for scripts that make work)."""
    return _RING_LUA.format(n=key_index)


class Doorbell:
    """One process's waiting side of a bell: `wait` blocks until a ring or a timeout.

    It has its own Redis connections, whose reads may last as long as the longest wait; the
    shared client's read timeout is a fraction of a second. Any number of threads may wait.
    """

    def __init__(self, settings: Settings, bell: str, *, owner: str) -> None:
        self.bell = bell
        self.stop_key = keys.bell_stop(owner)
        self._client = create_redis(
            settings.redis_url,
            timeout_s=settings.redis_timeout_s,
            read_timeout_s=IDLE_WAIT_S + settings.redis_timeout_s + 1.0,
            retries=0,  # a wait that failed is simply over: the caller looks, then waits again
        )

    def wait(self, timeout_s: float = IDLE_WAIT_S) -> bool:
        """Block until the bell rings, `wake` is called or `timeout_s` passes; True if rung.

        Raises redis.RedisError when Redis is away (the caller backs off).
        """
        timeout = max(_MIN_WAIT_S, min(timeout_s, IDLE_WAIT_S))
        return self._client.blpop([self.bell, self.stop_key], timeout=timeout) is not None

    def wake(self, waiters: int) -> None:
        """Wake this process's `waiters` now (at shutdown); best effort if Redis is away."""
        try:
            pipe = self._client.pipeline(transaction=True)
            pipe.lpush(self.stop_key, *(["1"] * max(1, waiters)))
            pipe.pexpire(self.stop_key, int(IDLE_WAIT_S * 2000))
            pipe.execute()
        except redis.RedisError:
            pass  # the waits end at their timeout instead

    def close(self) -> None:
        self._client.close()


def wait_for_work(
    bell: Doorbell | None, seconds: float, stop: threading.Event, *, short_s: float
) -> None:
    """How idle threads wait: a wait of at most `short_s` (a batch lingering, the due interval),
    or any wait without a bell, is slept out; a longer one is spent on the bell, so work that
    arrives ends it. Either ends when `stop` is set. Redis away: back off a second, then the
    caller looks again (and reports what it finds)."""
    if bell is None or seconds <= short_s:
        stop.wait(seconds)
        return
    try:
        bell.wait(seconds)
    except Exception as exc:  # Redis away (or a bug): never end the waiting thread
        if not stop.is_set():
            log.warning(
                "doorbell_wait_failed", bell=bell.bell, error=f"{type(exc).__name__}: {exc}"
            )
            stop.wait(1.0)
