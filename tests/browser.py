"""What the tests that drive a real browser share: finding Debian's Chromium (installing it with
apt-get when missing and root), waiting, and starting processes with their output in a file.

Used by test_flower_ui.py and test_console_browser.py. Browsers are never downloaded: Playwright
and the plain `--headless` runs both drive `/usr/bin/chromium`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

#: apt-get may download ~100 MB on a fresh machine.
INSTALL_TIMEOUT_S = 420
WAIT_S = 45

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], what: str, timeout_s: float = WAIT_S) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.2)


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)


def _apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["apt-get", "-o", "DPkg::Lock::Timeout=120", *args],
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S / 2,
        check=False,
    )


def _install_chromium() -> str:
    """Install Debian's chromium (and a font, so text renders); return why it failed, or ''."""
    if shutil.which("apt-get") is None:
        return "apt-get not found"
    if os.geteuid() != 0:
        return "not root, so apt-get cannot install packages"
    packages = ("chromium", "fonts-liberation")
    try:
        result = _apt_get("install", "-y", *packages)
        if result.returncode != 0:  # stale or missing package lists: refresh once and retry
            _apt_get("update")
            result = _apt_get("install", "-y", *packages)
    except subprocess.TimeoutExpired:
        return f"apt-get took longer than {INSTALL_TIMEOUT_S / 2:.0f}s"
    if result.returncode != 0:
        return f"apt-get install failed: {(result.stdout + result.stderr)[-800:]}"
    return ""


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def chromium_or_skip() -> str:
    """The path of a headless-capable Chromium, installed when missing; outside CI a machine
    that cannot install it skips the test, in CI it fails."""
    path = find_chromium()
    if path is None:
        reason = _install_chromium()
        path = find_chromium()
        if path is None:
            message = f"headless Chromium unavailable ({reason or 'not on PATH after install'})"
            if os.environ.get("CI"):
                pytest.fail(f"{message}; CI must be able to install it")
            pytest.skip(f"{message}; run `apt-get install -y chromium` to enable this test")
    return path
