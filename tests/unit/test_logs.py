"""Logs: one record per line whatever thread writes it, the SDK's repeats folded."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path

from relay.logs import RepeatFolder

THREADS, RECORDS = 8, 500

# Half the threads log through structlog, half through stdlib logging (as the SDK does
# from its own thread), long records among them, all at once.
SCRIPT = textwrap.dedent(
    f"""
    import logging, threading, structlog
    from relay.logs import configure_logging
    configure_logging("info", "json")
    start = threading.Barrier({THREADS})
    def structlog_thread(n):
        log = structlog.get_logger("relay.test")
        start.wait()
        for i in range({RECORDS}):
            log.info("structlog_record", thread=n, i=i, pad="x" * (i % 7 * 1000))
    def stdlib_thread(n):
        log = logging.getLogger("sdk.test")
        start.wait()
        for i in range({RECORDS}):
            log.warning("stdlib record %d %d %s", n, i, "y" * (i % 5 * 1500))
    threads = [
        threading.Thread(target=structlog_thread if n % 2 else stdlib_thread, args=(n,))
        for n in range({THREADS})
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    """
)


def test_records_from_many_threads_are_one_json_object_a_line(tmp_path: Path) -> None:
    out = tmp_path / "out.log"
    with out.open("wb") as file:  # stdout and stderr in one file, as the issue saw it
        subprocess.run(
            [sys.executable, "-c", SCRIPT], stdout=file, stderr=file, check=True, timeout=60
        )
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b""  # ends with a newline
    records = [json.loads(line) for line in lines[:-1]]  # any glued or empty line raises
    assert len(records) == THREADS * RECORDS
    structlog_records = [r for r in records if r["event"] == "structlog_record"]
    stdlib_records = [r for r in records if r.get("logger") == "sdk.test"]
    assert len(structlog_records) == len(stdlib_records) == THREADS // 2 * RECORDS


def record(message: str, name: str = "livekit") -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, message, None, None)


def test_repeated_sdk_records_are_folded_with_a_count() -> None:
    folder = RepeatFolder(window_s=3600)
    first = record("failed to connect, retrying... (1/3)")
    assert folder.filter(first)
    # The same record with other numbers is the same kind: held back.
    assert not any(folder.filter(record(f"failed to connect, retrying... ({n}/3)")) for n in (2, 3))
    assert folder.filter(record("another message"))
    # Not the SDK: never folded.
    assert all(folder.filter(record("same", name="relay")) for _ in range(3))


def test_the_next_record_after_the_window_carries_the_count() -> None:
    folder = RepeatFolder(window_s=0.0)
    assert folder.filter(record("x 1"))
    later = record("x 2")
    assert folder.filter(later)  # window passed: let through, nothing was held
    assert not hasattr(later, "folded")
    folder = RepeatFolder(window_s=3600)
    folder.filter(record("y 1"))
    for n in range(5):
        folder.filter(record(f"y {n}"))
    folder._window_s = 0.0  # the window ends
    after = record("y 9")
    assert folder.filter(after)
    assert after.folded == 5  # type: ignore[attr-defined]
