"""Python's cycle collector, kept off the hot path of a long-running process.

A batch sender decodes and builds thousands of small objects a request, and the sandbox parses
every body it receives and keeps it (its record of requests). With Python's default thresholds
(a young collection every 700 new objects) each request set off dozens of collections, and
those of the older generations walked Celery's and kombu's objects, or the sandbox's whole
record, every time. In bench/throughput.py that was a third of a worker's CPU (issue 18), and
close to half of the sandbox's parse of a body it keeps.
"""

from __future__ import annotations

import gc

#: New objects between two runs of the cycle collector (Python's default: 700).
THRESHOLD = 20_000


def quiet_collector() -> None:
    """Move the objects alive now (modules, classes, the app) out of the collector's sight, and
    make a collection wait for THRESHOLD new objects. Cycles are still collected. Call it once
    a process has started, before its work."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(THRESHOLD, *gc.get_threshold()[1:])
