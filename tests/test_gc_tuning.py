"""The cycle collector's tuning (cio_worker/gc_tuning.py), in a fresh interpreter: it changes
the process it runs in, so never in this one."""

from __future__ import annotations

import subprocess
import sys

from cio_worker.gc_tuning import THRESHOLD

CHECK = """
import gc
from cio_worker.gc_tuning import quiet_collector
before = gc.get_threshold()
quiet_collector()
after = gc.get_threshold()
print(before[0], after[0], after[1:] == before[1:], gc.get_freeze_count() > 0)
"""


def test_quiet_collector_freezes_what_is_alive_and_raises_the_young_threshold() -> None:
    done = subprocess.run(
        [sys.executable, "-c", CHECK], capture_output=True, text=True, check=True, timeout=60
    )
    default, tuned, older_kept, frozen = done.stdout.split()
    assert (default, tuned) == ("700", str(THRESHOLD))
    assert older_kept == "True", "only the young generation's threshold changes"
    assert frozen == "True", "the objects alive at start-up are out of the collector's sight"
