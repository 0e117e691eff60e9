"""Headless Chromium for the app tests: Debian's chromium driven by Playwright.

The browser is never downloaded by ``playwright install`` (nothing outside the package
registries is reachable here): the test setup installs Debian's ``chromium`` with apt when it
is missing and we are root, and skips with the reason otherwise.

Fixtures (import them into a test module with ``from tests.browser_helpers import *`` or by
name):

- ``chromium_path`` (session): path of the chromium binary, installing it when needed.
- ``browser`` (session): a Playwright ``Browser`` launched from that binary (fresh profile).
- ``artifacts_dir`` (session): where screenshots go: ``$SECFM_TEST_ARTIFACTS`` or a tmp folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def ensure_chromium(path: str = CHROMIUM, timeout: float = 900.0) -> str:
    """Return the chromium binary, installing Debian's package when missing and root.

    Raises ``RuntimeError`` with the reason when it cannot be had (callers turn it into a skip).
    """
    if os.path.exists(path):
        return path
    found = shutil.which("chromium")
    if found:
        return found
    if os.name != "posix" or os.geteuid() != 0:
        raise RuntimeError(f"{path} is missing and we are not root: run `apt-get install -y chromium` first")
    if not shutil.which("apt-get"):
        raise RuntimeError(f"{path} is missing and there is no apt-get to install Debian's chromium")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"`{' '.join(cmd)}` failed: {' | '.join(tail)}")
    if not os.path.exists(path):
        raise RuntimeError(f"apt-get installed chromium but {path} is still missing")
    return path


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 300.0, proc: subprocess.Popen | None = None) -> None:
    """Wait until ``url`` answers (any HTTP status), or raise with the reason."""
    import httpx

    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the app process exited with {proc.returncode} before answering {url}")
        try:
            httpx.get(url, timeout=5.0)
            return
        except httpx.HTTPError as exc:
            last = exc
            time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f}s: {last}")


def launch_browser(playwright, executable: str):
    """A headless Browser from Debian's chromium (never Playwright's own download).

    ``launch`` gives the browser a fresh, throw-away user-data dir of its own (Playwright
    refuses ``--user-data-dir`` in ``args``); each ``browser.new_context()`` is then an
    isolated profile (cookies, storage), which is how the tests play two analysts.
    """
    return playwright.chromium.launch(executable_path=executable, headless=True, args=list(CHROMIUM_ARGS))


@pytest.fixture(scope="session")
def chromium_path() -> str:
    try:
        return ensure_chromium()
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"no headless chromium: {exc}")


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory) -> Path:
    env = os.environ.get("SECFM_TEST_ARTIFACTS")
    path = Path(env) if env else tmp_path_factory.mktemp("app-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="session")
def browser(chromium_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - playwright is a test dependency
        pytest.skip(f"playwright is not installed: {exc}")
    with sync_playwright() as pw:
        browser = launch_browser(pw, chromium_path)
        try:
            yield browser
        finally:
            browser.close()


__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "artifacts_dir",
    "browser",
    "chromium_path",
    "ensure_chromium",
    "free_port",
    "launch_browser",
    "wait_http",
]
