"""The native library's stderr as relay's log records: one JSON line each.

With `livekit.native_logs = "native"` (the default) the SDK's native library keeps its
log records (relay/observer/sdk_internals.py: the cost per packet of handing them to
Python goes away) and writes the ones RUST_LOG selects to file descriptor 2 in
env_logger's text format. Plain text lines would break the rule that every record is one
JSON line, so relay points descriptor 2 at a pipe and a thread turns each native record
into a stdlib record of logger `livekit.native` (then formatted, folded and filtered like
every other record). Python's own writes to stderr (relay's handler, tracebacks, the
fault handler) go to the original stderr, a copy of the old descriptor 2.

RUST_LOG defaults to `warn` here: the records relay shows from libraries (warnings and
above), so the native side formats nothing it would drop. A write the thread could not
read yet waits in the pipe (1 MiB); if the thread ever ends, and at the interpreter's exit,
descriptor 2 is pointed back at the original stderr, so native writers never block on a
pipe nobody reads.
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import fcntl
import logging
import os
import re
import sys
import threading
from typing import IO

NATIVE_LOGGER = "livekit.native"
DEFAULT_RUST_LOG = "warn"
PIPE_BYTES = 1 << 20
# env_logger's default format: "[2026-12-01T18:20:15Z WARN  livekit::rtc_engine] text".
# Records written by two native threads can share a line: each header starts a record.
HEADER = re.compile(rb"\[(\d{4}-\d\d-\d\dT[^ \]]*) +(ERROR|WARN|INFO|DEBUG|TRACE) +([^\]\s]*)\] ?")
LEVELS = {
    b"ERROR": logging.ERROR,
    b"WARN": logging.WARNING,
    b"INFO": logging.INFO,
    b"DEBUG": logging.DEBUG,
    b"TRACE": 5,
}


def records(line: bytes) -> list[tuple[int, str]]:
    """(level, message) of each native record in one line of stderr. Text that is not
    env_logger's (a panic, a C++ library's own print) is a warning of its own."""
    line = line.rstrip(b"\r\n")
    found: list[tuple[int, str]] = []
    headers = list(HEADER.finditer(line))
    start = headers[0].start() if headers else len(line)
    if line[:start].strip():
        found.append((logging.WARNING, _text(line[:start].strip())))
    for n, header in enumerate(headers):
        end = headers[n + 1].start() if n + 1 < len(headers) else len(line)
        target = _text(header.group(3))
        found.append((LEVELS[header.group(2)], f"{target} - {_text(line[header.end() : end])}"))
    return found


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "backslashreplace").strip()


class NativeStderr:
    """Descriptor 2 read by a thread; `start()` once per process, before the SDK's first use."""

    def __init__(self) -> None:
        self._original_fd = -1
        self._thread: threading.Thread | None = None
        self.stream: IO[str] | None = None  # the original stderr, for Python's writes

    def start(self) -> None:
        os.environ.setdefault("RUST_LOG", DEFAULT_RUST_LOG)
        os.environ.setdefault("RUST_LOG_STYLE", "never")  # no colour codes in messages
        sys.stderr.flush()
        self._original_fd = os.dup(2)
        self.stream = open(  # noqa: SIM115 - lives as long as the process
            self._original_fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace"
        )
        self._repoint_python(sys.stderr, self.stream)
        read_fd, write_fd = os.pipe()
        with contextlib.suppress(OSError):  # Linux only; the default 64 KiB otherwise
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._thread = threading.Thread(
            target=self._pump, args=(read_fd,), name="relay-native-stderr", daemon=True
        )
        self._thread.start()
        # At exit (before logging's own shutdown: atexit runs last-registered first) the
        # thread logs what is left, and later native writes go to the original stderr.
        atexit.register(self.stop)

    def _repoint_python(self, old: IO[str], new: IO[str]) -> None:
        """Every Python writer of the old stderr writes to the original one instead."""
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is old:
                handler.setStream(new)
        sys.stderr = new
        if faulthandler.is_enabled():
            faulthandler.enable(file=new)

    def _pump(self, read_fd: int) -> None:
        log = logging.getLogger(NATIVE_LOGGER)
        try:
            with open(read_fd, "rb") as pipe:
                for line in pipe:
                    for level, message in records(line):
                        log.log(level, "%s", message)
        finally:  # never leave native writers on a pipe nobody reads
            os.dup2(self._original_fd, 2)

    def stop(self) -> None:
        """Descriptor 2 back to the original stderr (tests; a process just exits)."""
        if self._thread is None:
            return
        os.dup2(self._original_fd, 2)  # the pipe's last write end: the thread sees its end
        self._thread.join(timeout=5)
        self._thread = None
