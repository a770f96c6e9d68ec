"""The native library's stderr as relay's JSON records (relay/native_logs.py): in a fresh
interpreter with the real native library and log capture off, a failed connect's native
warnings arrive as JSON lines of logger livekit.native, and so does any raw write to
descriptor 2; nothing on stderr is plain text."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

from relay.native_logs import records

# Each probe runs in a fresh interpreter: relay's logging, then the pipe to the reader.
SET_UP = """
import os, sys
from relay.logs import configure_logging
from relay.native_logs import NativeStderr
from relay.observer import sdk_internals

configure_logging("info", "json")
{before_start}
NativeStderr().start("info", "json")
"""

PROBE = (
    SET_UP.format(before_start="assert sdk_internals.keep_native_logs_native()")
    + """
import asyncio
from livekit import rtc

async def main():
    try:
        await rtc.Room().connect("ws://127.0.0.1:1", "a.b.c", rtc.RoomOptions(connect_timeout=2))
    except rtc.ConnectError:
        pass

asyncio.run(main())
os.write(2, b"a raw native line\\n")
print("python's own stderr", file=sys.stderr, flush=True)
import time; time.sleep(0.5)  # the reader logs what it read
os._exit(0)
"""
)


def run_probe(code: str, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},  # no RUST_LOG from the caller: relay's default
        check=check,
    )


def test_native_records_become_json_lines_on_stderr() -> None:
    done = run_probe(PROBE)
    lines = done.stderr.splitlines()
    assert "python's own stderr" in lines  # Python's writes bypass the pipe
    parsed = [json.loads(line) for line in lines if line != "python's own stderr"]
    native = [r for r in parsed if r.get("logger") == "livekit.native"]
    assert any("failed to connect" in r["event"] and r["level"] == "warning" for r in native)
    assert {"event": "a raw native line", "level": "warning"}.items() <= next(
        r for r in native if "raw" in r["event"]
    ).items()
    assert all(r["level"] in ("warning", "error") for r in native)  # RUST_LOG=warn


def test_each_header_starts_a_record_even_inside_a_line() -> None:
    glued = (
        b"[2026-12-01T18:20:15Z INFO  livekit_signaling::signal_stream] connecting to ws://x"
        b"[2026-12-01T18:20:15Z ERROR livekit_ffi::room] error while connecting\n"
    )
    assert records(glued) == [
        (logging.INFO, "livekit_signaling::signal_stream - connecting to ws://x"),
        (logging.ERROR, "livekit_ffi::room - error while connecting"),
    ]


def test_text_that_is_not_env_logger_is_a_warning() -> None:
    assert records(b"thread 'tokio' panicked at src/x.rs:1\n") == [
        (logging.WARNING, "thread 'tokio' panicked at src/x.rs:1")
    ]
    assert records(b"\n") == []


EXIT_PROBE = (
    SET_UP.format(before_start="")
    + """
os.write(2, b"written just before exit\\n")
"""
)


def test_what_is_written_just_before_exit_is_logged_before_the_process_ends() -> None:
    done = run_probe(EXIT_PROBE)
    [record] = [json.loads(line) for line in done.stderr.splitlines()]
    assert (record["event"], record["logger"]) == ("written just before exit", "livekit.native")


ABORT_PROBE = (
    SET_UP.format(before_start="")
    + """
os.write(2, b"[2026-12-01T18:20:15Z ERROR libwebrtc] Fatal error in: a check failed\\n")
os.abort()  # what a native library does after its last words
"""
)


def test_a_native_libraries_last_words_before_an_abort_are_logged() -> None:
    done = run_probe(ABORT_PROBE, check=False)
    assert done.returncode == -6  # SIGABRT
    [record] = [json.loads(line) for line in done.stderr.splitlines()]
    assert (record["event"], record["level"]) == (
        "libwebrtc - Fatal error in: a check failed",
        "error",
    )
