"""CPU instructions per bulk enqueue: a figure that does not drift with the machine's load.

Run: .venv/bin/python bench/instructions.py [--kind track|send_email] [--jobs 5000,25000]

Wall-clock rates on a shared machine move by half between two runs of the same code; the number
of instructions the producer executes does not. This runs the loop of `bench/enqueue.py`'s bulk
figure (`with producer.pipeline() as bulk: ...`) in a child process under valgrind's callgrind,
for two job counts against one redis-server (Redis's own work is not counted), and prints the
difference per job: the interpreter's start-up and imports cancel out. It needs `valgrind` on
PATH (Debian: `apt-get install valgrind`); it takes a minute or two.

`--no-write` leaves out the writes to Redis (the flush thread's encoding and sending): what is
left is validation, ids and buffering.

Under callgrind the loop runs about fifty times slower, so the work ids do once a millisecond
(fresh randomness, encoding the time) is shared by a few jobs instead of a hundred: the figure
overstates ids by several thousand instructions a job. Compare trees with it, not with a rate.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from cio_worker.dev import RedisServer

#: The child: `python -c CHILD <redis url> <jobs> <kind> <write: 1|0>`.
CHILD = """
import sys
from cio_worker import Producer
from cio_worker.config import Settings
from cio_worker.produce._producer import BulkProducer
url, jobs, kind, write = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
settings = Settings.from_env({"CIO_WORKER_REDIS_URL": url, "CIO_WORKER_SANDBOX_URL": "http://x"})
if not write:
    BulkProducer._write = lambda self, flush: flush.count
with Producer(settings).pipeline() as bulk:
    if kind == "track":
        for i in range(jobs):
            bulk.enqueue_track(f"user-{i % 10_000}", "Viewed Page", {"page": "/pricing", "n": i})
    else:
        for i in range(jobs):
            bulk.enqueue_send_email(1, identifiers={"id": f"user-{i}"}, to=f"user-{i}@example.com")
"""


def instructions(url: str, jobs: int, kind: str, *, write: bool) -> int:
    """Instructions callgrind counted for one child run."""
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        "-c",
        CHILD,
        url,
        str(jobs),
        kind,
        "1" if write else "0",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise SystemExit(f"callgrind printed no count:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", choices=("track", "send_email"), default="track")
    parser.add_argument("--jobs", default="5000,25000", help="two job counts, comma-separated")
    parser.add_argument("--no-write", action="store_true", help="leave out the Redis writes")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    low, high = sorted(int(n) for n in args.jobs.split(","))
    with tempfile.TemporaryDirectory() as tmp, RedisServer(Path(tmp)) as server:
        counts = [
            instructions(server.url, n, args.kind, write=not args.no_write) for n in (low, high)
        ]
    per_job = (counts[1] - counts[0]) / (high - low)
    writes = "without the Redis writes" if args.no_write else "writes included"
    print(f"bulk {args.kind}: {per_job:,.0f} instructions per job ({writes}; {low:,} and {high:,})")


if __name__ == "__main__":
    main()
