"""cio_worker's pytest plugin: the `cio_jobs` fixture (installed with the package).

    def test_signup(cio_jobs):
        client.post("/signup", json={"email": "ada@example.com"})
        cio_jobs.assert_enqueued("track", user_id="ada@example.com", event="Signed Up")

For the test, every `cio_worker.enqueue_*` (and `cio_worker.aio.enqueue_*` on the loops
`cio_worker.testing.capture` covers) keeps its job in memory instead of storing it in Redis,
validated as a real enqueue is; the previous default producer comes back after the test.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cio_worker.testing import CapturedJobs, capture


@pytest.fixture
def cio_jobs() -> Iterator[CapturedJobs]:
    """The jobs the test enqueued (`cio_worker.testing.CapturedJobs`); no Redis needed."""
    with capture() as jobs:
        yield jobs
