"""One filter for dead letters (`LetterFilter`), shared by `dlq list/replay/purge` and the console:
kind, family, HTTP status, reason text and age, applied by the store in Redis order."""

from __future__ import annotations

import time

import fakeredis
import pytest

from cio_worker.config import Settings
from cio_worker.ids import new_ulid
from cio_worker.job import Job
from cio_worker.kinds import Family, Kind
from cio_worker.queue import DeadLetterStore, LetterFilter
from cio_worker.queue._ledger import ErrorRecord

NOW = time.time()


@pytest.fixture
def store() -> DeadLetterStore:
    store = DeadLetterStore(fakeredis.FakeRedis())
    letters = [
        (Kind.SEND_EMAIL, "400 Bad Request: template 7 not found", 400, NOW - 3 * 3600),
        (Kind.TRACK, "422 Unprocessable: event name too long", 422, NOW - 2 * 3600),
        (Kind.SEND_EMAIL, "gave up after 10 attempts: ReadTimeout", None, NOW - 600),
        (Kind.BROADCAST, "400 Bad Request: broadcast 9 has no trigger", 400, NOW - 60),
    ]
    for kind, reason, status, at in letters:
        job = Job(id=new_ulid(), kind=kind, payload={"n": reason}, created_at=at - 1)
        store.add(job, 1, ErrorRecord(reason, status, None, at), None)
    return store


def reasons(letters: list) -> list[str]:  # type: ignore[type-arg]
    return [letter.reason.split(":")[0] for letter in letters]


def test_every_field_narrows_and_order_is_oldest_first(store: DeadLetterStore) -> None:
    assert len(store.select()) == store.count_matching() == 4
    emails = store.select(LetterFilter(kind=Kind.SEND_EMAIL))
    assert reasons(emails) == ["400 Bad Request", "gave up after 10 attempts"]
    assert len(store.select(LetterFilter(family=Family.BROADCAST))) == 1
    assert reasons(store.select(LetterFilter(status=400))) == ["400 Bad Request"] * 2
    assert reasons(store.select(LetterFilter(status=0))) == ["gave up after 10 attempts"]
    assert len(store.select(LetterFilter(reason="BAD REQUEST"))) == 2  # case-insensitive


def test_age_is_time_since_dead_lettered(store: DeadLetterStore) -> None:
    old = store.select(LetterFilter(older_than_s=3600))
    assert reasons(old) == ["400 Bad Request", "422 Unprocessable"]
    recent = LetterFilter(newer_than_s=1800)
    assert store.count_matching(recent) == 2
    both = LetterFilter(kind=Kind.SEND_EMAIL, older_than_s=300, newer_than_s=7200)
    assert reasons(store.select(both)) == ["gave up after 10 attempts"]


def test_pages_and_ids_follow_the_filter(store: DeadLetterStore) -> None:
    everything = store.select()
    assert store.select(limit=2, offset=1) == everything[1:3]
    assert store.matching_ids(LetterFilter(status=400)) == [
        letter.job.id for letter in everything if letter.status == 400
    ]


def test_replay_reports_progress_per_id(store: DeadLetterStore) -> None:
    ids = store.matching_ids(LetterFilter(status=400))
    ticks: list[int] = []

    done = store.replay(
        [*ids, "01NOSUCHLETTER0000000000000"], settings=Settings(), progress=ticks.append
    )
    assert done == ids
    assert ticks == [1, 1, 1]
    assert store.count_matching(LetterFilter(status=400)) == 0
