"""The native library's stderr as relay's log records: one JSON line each.

With `livekit.native_logs = "native"` (the default) the SDK's native library keeps its
log records (relay/observer/sdk_internals.py: the cost per packet of handing them to
Python goes away) and writes the ones RUST_LOG selects to file descriptor 2 in
env_logger's text format. Plain text lines would break the rule that every record is one
JSON line, so relay points descriptor 2 at a pipe read by a small child process
(`python -m relay.native_logs`) that turns each native record into a stdlib record of
logger `livekit.native`, formatted and folded like every other record, on the original
stderr. Python's own writes to stderr (relay's handler, tracebacks, the fault handler)
go to the original stderr directly.

A child rather than a thread: what a native library writes just before it aborts the
process (a failed check) is still in the pipe when the process is gone; a thread would
go with it, the child reads it to the end. It ignores SIGINT and SIGTERM and exits when
the pipe's last writer closes it (the relay's exit, however it ends). RUST_LOG defaults
to `warn` here: the records relay shows from libraries (warnings and above), so the
native side formats nothing that would be dropped. A write the child could not read yet
waits in the pipe (1 MiB). If the child dies, native writes fail (EPIPE) and are lost;
nothing blocks on them.
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import fcntl
import logging
import os
import re
import signal
import subprocess
import sys
from typing import IO, get_args

from relay.logs import LogFormat, configure_logging

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
    """Descriptor 2 read by the child; `start()` once per process, before the SDK's first
    use."""

    def __init__(self) -> None:
        self._original_fd = -1
        self._reader: subprocess.Popen[bytes] | None = None
        self.stream: IO[str] | None = None  # the original stderr, for Python's writes

    def start(self, level: str = "info", fmt: LogFormat = "auto") -> None:
        """`level`, `fmt`: the relay's own log settings, for the child's records."""
        os.environ.setdefault("RUST_LOG", DEFAULT_RUST_LOG)
        os.environ.setdefault("RUST_LOG_STYLE", "never")  # no colour codes in messages
        sys.stderr.flush()
        self._original_fd = os.dup(2)
        read_fd, write_fd = os.pipe()
        with contextlib.suppress(OSError):  # Linux only; the default 64 KiB otherwise
            fcntl.fcntl(write_fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        try:
            self._reader = subprocess.Popen(
                [sys.executable, "-m", "relay.native_logs", level, fmt],
                stdin=read_fd,
                stdout=self._original_fd,
                stderr=self._original_fd,
            )
        finally:
            os.close(read_fd)
        self.stream = open(  # noqa: SIM115 - lives as long as the process
            self._original_fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace"
        )
        self._repoint_python(sys.stderr, self.stream)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        # At exit the child reads what is left and ends; later native writes go to the
        # original stderr.
        atexit.register(self.stop)

    def _repoint_python(self, old: IO[str], new: IO[str]) -> None:
        """Every Python writer of the old stderr writes to the original one instead."""
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is old:
                handler.setStream(new)
        sys.stderr = new
        if faulthandler.is_enabled():
            faulthandler.enable(file=new)

    def stop(self) -> None:
        """Descriptor 2 back to the original stderr; the child ends (tests; at exit)."""
        if self._reader is None:
            return
        os.dup2(self._original_fd, 2)  # the pipe's last write end: the child sees its end
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._reader.wait(timeout=5)
        self._reader = None


def main(argv: list[str]) -> int:
    """The child: stdin is the pipe, stdout and stderr the relay's original stderr."""
    for sig in (signal.SIGINT, signal.SIGTERM):  # it ends with the relay, at the pipe's end
        signal.signal(sig, signal.SIG_IGN)
    level, fmt = argv if len(argv) == 2 else ("info", "auto")
    configure_logging(level, fmt if fmt in get_args(LogFormat) else "auto")  # type: ignore[arg-type]
    log = logging.getLogger(NATIVE_LOGGER)
    for line in sys.stdin.buffer:
        for record_level, message in records(line):
            log.log(record_level, "%s", message)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
