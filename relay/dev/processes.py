"""Processes the dev tools start, controlled by PID: stop, kill, wait for a ready line.

Every process leads its own session (`start_new_session=True`), so its process group
holds what it forked, and a stop that SIGKILLs the group leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

STOP_GRACE_S = 3.0


@dataclass
class ManagedProcess:
    """A process started by the dev tools; `pid` leads its own session."""

    name: str
    popen: subprocess.Popen[bytes]

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGTERM the process (once), SIGKILL its group after `grace_s`."""
        if self.popen.poll() is None:
            signal_pids([self.pid], signal.SIGTERM)
            try:
                self.popen.wait(grace_s)
            except subprocess.TimeoutExpired:
                signal_group(self.pid, signal.SIGKILL)
                self.popen.wait(grace_s)
        self._finish()
        return self.popen.returncode

    def kill(self, grace_s: float = STOP_GRACE_S) -> int | None:
        """SIGKILL the process and its group at once (a crash, not a stop)."""
        signal_group(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(grace_s)
        self._finish()
        return self.popen.returncode

    def _finish(self) -> None:
        # Children that outlived their leader still carry its process group id.
        signal_group(self.pid, signal.SIGKILL)
        for stream in (self.popen.stdin, self.popen.stdout, self.popen.stderr):
            if stream is not None:
                stream.close()


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def signal_pids(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def wait_for_line(proc: ManagedProcess, needle: bytes, timeout_s: float) -> bytes:
    """Read `proc`'s stdout until a line contains `needle`; raise if it exits or stalls."""
    assert proc.popen.stdout is not None
    fd = proc.popen.stdout.fileno()
    deadline = time.monotonic() + timeout_s
    buf = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
            for line in buf.splitlines():
                if needle in line:
                    _drain(proc)
                    return line
        elif not proc.alive():
            break
    raise RuntimeError(f"{proc.name} (pid {proc.pid}) not ready: {buf.decode(errors='replace')}")


def _drain(proc: ManagedProcess) -> None:
    """Keep reading `proc`'s stdout so a chatty process never blocks on a full pipe."""
    stream = proc.popen.stdout
    if stream is not None:
        threading.Thread(target=lambda: stream.read(), daemon=True).start()
