"""`cio-worker` for people and scripts: one line and exit 1 (never a traceback) when Redis or
Customer.io is away; whole ids; `dlq` filters shared by list/replay/purge, `--dry-run`,
confirmation and progress on a terminal; `--version`; help for every option; `status` naming
its Redis, the workers online and which counts are cumulative.

Against a real Redis server, real `cio-worker` processes, a real Celery worker and a real
pseudo-terminal."""

from __future__ import annotations

import argparse
import json
import os
import pty
import re
import select
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from cio_worker.cli._main import build_parser, main
from cio_worker.config import Settings
from cio_worker.dev import free_port
from cio_worker.produce import Producer
from cio_worker.queue import DeadLetterStore, ErrorRecord, JobLedger
from cio_worker.version import __version__

CLI = [sys.executable, "-m", "cio_worker"]

#: One invocation of every command that uses Redis. `sandbox` needs no Redis and `demo` starts
#: its own, so neither reads CIO_WORKER_REDIS_URL. `check` prints its report (Redis first) and
#: `metrics` serves `cio_worker_redis_up 0`: both are tested on their own below.
REDIS_COMMANDS: dict[str, list[str]] = {
    "status": ["status"],
    "dlq list": ["dlq", "list", "--json"],
    "dlq show": ["dlq", "show", "01M8PFAYA6A0000000000000000"],
    "dlq replay": ["dlq", "replay", "01M8PFAYA6A0000000000000000"],
    "dlq purge": ["dlq", "purge", "--all", "--yes"],
    "webhooks list": ["webhooks", "list"],
    "webhooks serve": ["webhooks", "serve", "--port", "{port}"],
    "people get": ["people", "get", "user-1"],
    "people search": ["people", "search", "--email", "a@example.com"],
    "segments": ["segments"],
    "campaigns": ["campaigns", "--json"],
    "campaign-metrics": ["campaign-metrics", "1"],
    "worker": ["worker"],
    "console": ["console", "--local-only", "--port", "{port}"],
}
WITHOUT_REDIS = {"sandbox", "demo"}


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


class TestRedisAway:
    def test_every_command_prints_one_line_and_exits_1(self) -> None:
        """Redis stopped (nothing on its port): each command, as its own process, prints one
        line on stderr naming Redis at its URL (password masked) and exits 1. `check` prints
        its report instead, the Redis line first."""
        parser = build_parser()
        commands = {
            f"{name} {action}".strip()
            for name, sub in subcommands(parser).items()
            for action in (subcommands(sub) if any(
                isinstance(a, argparse._SubParsersAction) for a in sub._actions
            ) else [""])
        }  # fmt: skip
        assert commands - WITHOUT_REDIS == {*REDIS_COMMANDS, "check", "metrics"}  # new: add it
        port = free_port()
        env = {
            "CIO_WORKER_REDIS_URL": f"redis://:s3cret@127.0.0.1:{port}/0",
            "CIO_WORKER_REDIS_TIMEOUT_S": "0.2",
            "CIO_WORKER_SANDBOX_URL": f"http://127.0.0.1:{free_port()}",  # credentials for all
        }
        processes = {
            name: subprocess.Popen(
                [*CLI, *(arg.format(port=free_port()) for arg in argv)],
                env={**os.environ, **env},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for name, argv in {**REDIS_COMMANDS, "check": ["check"]}.items()
        }
        outputs = {name: p.communicate(timeout=60) for name, p in processes.items()}
        results = {name: (processes[name].returncode, *out) for name, out in outputs.items()}
        check_code, check_out, check_err = results.pop("check")
        assert (check_code, check_err) == (1, "")
        assert check_out.startswith("fail") and f"127.0.0.1:{port}" in check_out.splitlines()[0]
        assert "Traceback" not in check_out
        for name, (code, out, err) in results.items():
            assert (code, out) == (1, ""), (name, out, err)
            (line,) = err.splitlines()
            assert line.startswith(f"cio-worker: {name}: Redis"), (name, line)
            assert f"redis://:***@127.0.0.1:{port}/0" in line, (name, line)
            assert "s3cret" not in err

    def test_the_exporter_says_so_in_one_line_and_serves_redis_down(self) -> None:
        """`metrics` is how Redis being down gets noticed: one line at start, then it serves
        `cio_worker_redis_up 0` (the alert's series) instead of exiting."""
        port, redis_port = free_port(), free_port()
        env = {"CIO_WORKER_REDIS_URL": f"redis://:s3cret@127.0.0.1:{redis_port}/0"}
        process = subprocess.Popen(
            [*CLI, "metrics", "--port", str(port)],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
                    break
                except httpx.TransportError:
                    assert process.poll() is None and time.monotonic() < deadline
                    time.sleep(0.1)
        finally:
            process.terminate()
            _, err = process.communicate(timeout=30)
        assert "cio_worker_redis_up 0" in body
        assert err.splitlines()[0] == (
            f"cio-worker: metrics: Redis at redis://:***@127.0.0.1:{redis_port}/0 does not answer "
            f"(ConnectionError: Error 111 connecting to 127.0.0.1:{redis_port}. Connection "
            "refused.); serving cio_worker_redis_up 0 until it does"
        )
        assert "Traceback" not in err and "s3cret" not in err


def ulid_like(text: str) -> list[str]:
    return re.findall(r"\b[0-9A-HJKMNP-TV-Z]{26}\b", text)


def seed(
    settings: Settings, client: redis.Redis, letters: list[tuple[str, int | None, float]]
) -> list[str]:
    """Real jobs moved to the dead-letter queue: (kind, HTTP status, age in seconds) each, as
    `send_email` or `identify` jobs; returns their ids, oldest first."""
    producer = Producer(settings, redis_client=client)
    ledger = JobLedger(client)
    store = DeadLetterStore(client)
    now = time.time()
    ids = []
    for n, (kind, status, age_s) in enumerate(letters):
        if kind == "send_email":
            job_id = producer.enqueue_send_email(7, identifiers={"id": f"u{n}"}, to="a@example.com")
        else:
            job_id = producer.enqueue_identify(f"u{n}", {"plan": "pro"})
        entry = ledger.load(job_id)
        assert entry is not None
        reason = f"{status} Bad Request: template 7 not found" if status else "gave up: timeout"
        store.add(entry.job, 1, ErrorRecord(reason, status, None, now - age_s), None)
        ids.append(job_id)
    client.delete("cio.transactional", "cio.track")
    return ids


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = {"CIO_WORKER_REDIS_URL": settings.redis_url, "CIO_WORKER_BATCH": "off"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`cio-worker ARGV` in this process (stdout is not a terminal): (code, stdout, stderr)."""
    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.usefixtures("cli_env")
class TestDeadLetters:
    def test_list_shows_whole_ids_and_says_how_many_more(
        self, settings: Settings, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Piped, every id is whole (pasteable into `dlq show`); past --limit a note on stderr
        says how many more exist; --all shows them; --json stays one array."""
        ids = seed(settings, redis_client, [("send_email", 400, 600 - n) for n in range(5)])
        code, out, err = cli(capsys, "dlq", "list", "--limit", "3")
        assert code == 0 and ulid_like(out) == ids[:3]
        assert err.strip() == "… 2 more; --all or --limit N to see them"
        code, out, err = cli(capsys, "dlq", "list", "--all")
        assert (code, ulid_like(out), err) == (0, ids, "")
        code, out, err = cli(capsys, "dlq", "list", "--limit", "3", "--json")
        assert [letter["id"] for letter in json.loads(out)] == ids[:3] and "2 more" in err
        code, out, _ = cli(capsys, "dlq", "show", ids[4])
        assert code == 0 and json.loads(out)["payload"]["identifiers"] == {"id": "u4"}

    @pytest.mark.parametrize(
        ("argv", "named"),
        [
            (["--kind", "bogus"], "invalid choice: 'bogus' (choose from 'identify'"),
            (["--family", "nope"], "'transactional'"),
            (["--older-than", "3x"], "a number and a unit s, m, h, d or w"),
            (["--status", "999"], "100-599, or 0 for no answer"),
            (["--limit", "0"], "--limit: '0' is not a whole number of at least 1"),
        ],
    )
    def test_bad_options_are_usage_errors_naming_the_rule(
        self, argv: list[str], named: str, capsys: pytest.CaptureFixture[str]
    ) -> None:
        code, out, err = cli(capsys, "dlq", "list", *argv)
        assert (code, out) == (2, "") and named in err

    def test_list_replay_and_purge_filter_alike_and_dry_run_changes_nothing(
        self, settings: Settings, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
    ) -> None:
        ids = seed(
            settings,
            redis_client,
            [
                ("send_email", 400, 7200),  # matches
                ("send_email", 400, 60),  # too recent
                ("send_email", 422, 7200),  # other status
                ("identify", 400, 7200),  # other kind
                ("send_email", None, 7200),  # no answer: status 0
                ("send_email", 400, 3 * 86400),  # matches
            ],
        )
        wanted = ["--kind", "send_email", "--status", "400", "--older-than", "1h", "--json"]
        listed = [letter["id"] for letter in json.loads(cli(capsys, "dlq", "list", *wanted)[1])]
        assert sorted(listed) == sorted([ids[0], ids[5]])
        for action in ("replay", "purge"):
            code, out, _ = cli(capsys, "dlq", action, *wanted, "--dry-run")
            plan = json.loads(out)
            assert code == 0 and (plan["dry_run"], plan["count"]) == (True, 2)
            assert plan["ids"] == listed
        code, out, _ = cli(capsys, "dlq", "purge", "--status", "0", "--dry-run")
        assert (code, out) == (0, "would purge 1 dead letter\n")
        assert DeadLetterStore(redis_client).count() == 6
        code, out, _ = cli(capsys, "dlq", "replay", *wanted, "--yes")
        assert json.loads(out)["ids"] == listed
        assert {job_id for job_id in ids if JobLedger(redis_client).load(job_id)} == set(listed)
        assert DeadLetterStore(redis_client).count() == 4

    def test_missing_ids_are_named(
        self, settings: Settings, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
    ) -> None:
        (real,) = seed(settings, redis_client, [("send_email", 400, 60)])
        code, out, err = cli(capsys, "dlq", "replay", "NOPE")
        assert (code, out, err) == (
            1,
            "",
            "cio-worker: dlq replay: no dead letter with id 'NOPE'\n",
        )
        code, out, err = cli(capsys, "dlq", "replay", real, "NOPE", "NOPE2", "--yes")
        assert (code, out) == (1, "replayed 1 dead letter\n")
        assert "no dead letter with id 'NOPE', 'NOPE2'" in err
        assert JobLedger(redis_client).load(real) is not None
        code, _, err = cli(capsys, "dlq", "show", "NOPE")
        assert code == 1 and "no dead letter with id 'NOPE'" in err

    def test_without_a_terminal_more_than_one_letter_needs_yes(
        self, settings: Settings, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A script must say --yes, unless it names exactly one id; it is refused with one
        line that states the count, and nothing changes."""
        ids = seed(settings, redis_client, [("send_email", 400, 60)] * 3)
        code, out, err = cli(capsys, "dlq", "purge", "--all")
        assert (code, out) == (2, "")
        assert err == (
            "cio-worker: dlq purge: would purge 3 dead letters; add --yes to go ahead "
            "(or --dry-run --json to see which)\n"
        )
        assert cli(capsys, "dlq", "purge", ids[0], ids[1])[0] == 2
        assert cli(capsys, "dlq", "purge", ids[0]) == (0, "purged 1 dead letter\n", "")
        code, out, _ = cli(capsys, "dlq", "purge", "--all", "--yes", "--json")
        assert (code, json.loads(out)["count"]) == (0, 2)
        assert DeadLetterStore(redis_client).count() == 0

    def test_which_letters_must_be_said(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, err = cli(capsys, "dlq", "replay")
        assert code == 2 and "say which letters: job ids, filters" in err
        code, _, err = cli(capsys, "dlq", "purge", "X", "--kind", "track")
        assert code == 2 and "give job ids, or filters / --all, not both" in err


class Terminal:
    """A `cio-worker` process whose stdin and stderr are a pseudo-terminal; stdout is a pipe,
    or the terminal too with `stdout_too` (then what it prints is in `screen`)."""

    def __init__(
        self, argv: list[str], env: dict[str, str], *, columns: int = 100, stdout_too: bool = False
    ) -> None:
        self.master, replica = pty.openpty()
        self.process = subprocess.Popen(
            [*CLI, *argv],
            env={**os.environ, **env, "COLUMNS": str(columns), "TERM": "xterm"},
            stdin=replica,
            stdout=replica if stdout_too else subprocess.PIPE,
            stderr=replica,
        )
        os.close(replica)
        self.screen = ""

    def read_until(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            assert time.monotonic() < deadline, self.screen
            if select.select([self.master], [], [], 0.1)[0]:
                try:
                    self.screen += os.read(self.master, 4096).decode(errors="replace")
                except OSError:  # the process closed the terminal
                    assert text in self.screen, self.screen

    def finish(self) -> tuple[int, str]:
        """(exit code, stdout); what it drew on the terminal is in `screen`."""
        out = ""
        if self.process.stdout is not None:
            with self.process.stdout:
                out = self.process.stdout.read().decode()
        code = self.process.wait(timeout=30)
        while select.select([self.master], [], [], 0.05)[0]:
            try:
                chunk = os.read(self.master, 4096)
            except OSError:
                break
            if not chunk:
                break
            self.screen += chunk.decode(errors="replace")
        os.close(self.master)
        return code, out


@pytest.mark.usefixtures("cli_env")
class TestOnATerminal:
    def test_replay_asks_with_the_count_and_shows_progress(
        self, settings: Settings, redis_client: redis.Redis, cli_env: dict[str, str]
    ) -> None:
        ids = seed(settings, redis_client, [("send_email", 400, 60)] * 25)
        declined = Terminal(["dlq", "replay", "--kind", "send_email"], cli_env)
        declined.read_until("Replay 25 dead letters? [y/N]")
        os.write(declined.master, b"n\n")
        assert declined.finish() == (1, "")
        assert DeadLetterStore(redis_client).count() == 25
        accepted = Terminal(["dlq", "replay", "--all"], cli_env)
        accepted.read_until("[y/N]")
        os.write(accepted.master, b"y\n")
        assert accepted.finish() == (0, "replayed 25 dead letters\n")
        assert "replaying" in accepted.screen and "25/25" in accepted.screen  # the bar
        assert all(JobLedger(redis_client).load(job_id) for job_id in ids)

    def test_a_narrow_terminal_still_shows_whole_ids(
        self, settings: Settings, redis_client: redis.Redis, cli_env: dict[str, str]
    ) -> None:
        ids = seed(settings, redis_client, [("send_email", 400, 60)] * 2)
        terminal = Terminal(["dlq", "list"], cli_env, columns=50, stdout_too=True)
        assert terminal.finish() == (0, "")
        assert ulid_like(re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", terminal.screen)) == ids


class TestCustomerIoAway:
    def test_an_app_api_read_ends_in_one_line_naming_the_api(
        self, redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """Customer.io unreachable: after its retries (logged) the read ends in one line naming
        the App API and its URL, exit 1."""
        nobody = f"http://127.0.0.1:{free_port()}"
        monkeypatch.setenv("CIO_WORKER_REDIS_URL", redis_url)
        monkeypatch.setenv("CIO_WORKER_SANDBOX_URL", nobody)
        code, out, err = cli(capsys, "segments", "--json")
        assert (code, out) == (1, "")
        assert err.splitlines()[-1].startswith(
            f"cio-worker: segments: Customer.io's App API at {nobody} does not answer (ConnectError"
        )
        assert "Traceback" not in err


class TestHelpAndVersion:
    def test_version(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert cli(capsys, "--version") == (0, f"cio-worker {__version__}\n", "")

    def test_every_command_and_option_has_help_and_shows_its_default(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        parser = build_parser()
        top = parser.format_help()
        undocumented = []

        def walk(path: str, node: argparse.ArgumentParser) -> Iterator[tuple[str, Any]]:
            for action in node._actions:
                if isinstance(action, argparse._SubParsersAction):
                    helps = {choice.dest: choice.help for choice in action._choices_actions}
                    for name, child in action.choices.items():
                        if not helps.get(name):
                            undocumented.append(f"{path} {name}")
                        yield from walk(f"{path} {name}", child)
                elif not isinstance(action, argparse._HelpAction):
                    yield path, action

        for path, action in walk("cio-worker", parser):
            if not action.help:
                undocumented.append(f"{path} {action.option_strings or action.dest}")
        assert undocumented == []
        for name in subcommands(parser):
            assert re.search(rf"^    {re.escape(name)}\s", top, re.M), name
        code, out, _ = cli(capsys, "dlq", "list", "--help")
        assert code == 0 and "show at most N letters (default: 100)" in " ".join(out.split())


class TestStatus:
    def test_names_its_redis_and_labels_what_is_cumulative(
        self,
        settings: Settings,
        redis_client: redis.Redis,
        cli_env: dict[str, str],
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """Two letters dead-lettered, one replayed: `dead-lettered 2` is in the cumulative
        table and `dead letters now: 1` below it."""
        ids = seed(settings, redis_client, [("send_email", 400, 60)] * 2)
        DeadLetterStore(redis_client).purge(ids[:1])
        code, out, _ = cli(capsys, "status")
        assert code == 0
        assert f"Redis: {settings.redis_url}\nworkers online: none answered\n" in out
        cumulative = out[out.index("since the counters began (cumulative)") :]
        assert re.search(r"transactional\s*│\s*2\s.*│\s*2\s*│", cumulative)
        assert "dead letters now: 1 (send_email 1; cio-worker dlq list)" in out

    def test_lists_the_workers_that_answer(
        self, settings: Settings, cli_env: dict[str, str], capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A real Celery worker, named; `status --json` lists it (and masks a password)."""
        env = {**os.environ, **cli_env, "CIO_WORKER_SANDBOX_URL": "http://127.0.0.1:9"}
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "cio_worker", "worker", "-n", "cli-test@%h",
             "--without-mingle", "--without-gossip", "--concurrency", "1"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while True:
                code, out, err = cli(capsys, "status", "--json")
                report = json.loads(out)
                if report["workers_online"]:
                    break
                assert worker.poll() is None and time.monotonic() < deadline, err
        finally:
            worker.terminate()
            worker.wait(timeout=30)
        assert report["workers_online"] == [f"cli-test@{socket.gethostname()}"]
        assert report["redis"] == settings.redis_url
