"""Headless Chromium (Debian's, never a downloaded one) inside a network namespace, driven
by Playwright, and the static server for the test pages.

Chromium runs inside the namespace (WebRTC to the dev server there): Playwright launches
a wrapper that is the namespace's `exec_argv` in front of /usr/bin/chromium, and talks to
it over the pipe it inherits. Playwright's sync API runs on one thread of its own (its
objects belong to the thread that made them), so the tests' event loop stays free:
`await browser.call(fn, ...)` runs `fn` there.
"""

from __future__ import annotations

import asyncio
import shlex
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from relay.dev.netns import NetNS
from relay.dev.processes import ManagedProcess

CHROMIUM = Path("/usr/bin/chromium")
WEB_DIR = Path(__file__).resolve().with_name("web")
INSTALL_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install-browser-deps.sh"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
T = TypeVar("T")


def install_browser_deps() -> str | None:
    """Chromium and tests/ingest/web/node_modules, installed when missing; why not, or None."""
    done = subprocess.run(
        ["bash", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode != 0:
        return f"scripts/install-browser-deps.sh failed: {done.stderr[-500:]}"
    return None


class NamespacedChromium:
    def __init__(self, ns: NetNS, tmp: Path) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="playwright")
        self._wrapper = tmp / "chromium-in-netns"
        argv = ns.exec_argv([str(CHROMIUM)], timeout_s=3 * 3600)
        self._wrapper.write_text(f'#!/bin/sh\nexec {shlex.join(argv)} "$@"\n')
        self._wrapper.chmod(0o755)
        self._playwright: Playwright | None = None
        self.browser: Browser | None = None
        self._pool.submit(self._start).result(timeout=60)

    def _start(self) -> None:
        self._playwright = sync_playwright().start()
        launch = self._playwright.chromium.launch
        self.browser = launch(executable_path=str(self._wrapper), args=CHROMIUM_ARGS)

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def new_page(self) -> Page:
        def make() -> Page:
            assert self.browser is not None
            return self.browser.new_context().new_page()

        return await self.call(make)

    def close(self) -> None:
        def stop() -> None:
            if self.browser is not None:
                self.browser.close()
            if self._playwright is not None:
                self._playwright.stop()

        self._pool.submit(stop).result(timeout=30)
        self._pool.shutdown()


def start_static_server(ns: NetNS) -> tuple[ManagedProcess, str]:
    """tests/ingest/web served inside the namespace; (process, base url)."""
    port = ns.free_port()
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", ns.addr]
    argv += ["--directory", str(WEB_DIR)]
    proc = ns.spawn(
        argv,
        name="static",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout_s=3 * 3600,
    )
    base = f"http://{ns.addr}:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            with urllib.request.urlopen(f"{base}/page.html", timeout=1):
                return proc, base
        except OSError:
            if time.monotonic() > deadline or not proc.alive():
                proc.stop()
                raise RuntimeError(
                    "the static server for tests/ingest/web never answered"
                ) from None
            time.sleep(0.05)
