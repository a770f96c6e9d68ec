"""Logging set-up: every record, relay's (structlog) and the libraries' (stdlib logging:
the LiveKit SDK's, from its own thread), goes through one stdlib handler to stderr, as
exactly one line: JSON in production, console output on a terminal.

One handler means one lock around each write: structlog's PrintLogger has a lock of its
own and writes a record and its newline in two calls, so records written by another
thread meanwhile were glued together. The SDK repeats itself (one failed connect: 8
records); `RepeatFolder` lets one record of a kind through per window and counts the
rest in the next one let through (`folded`).
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from typing import Literal

import structlog

LogFormat = Literal["auto", "json", "console"]
RELAY_LOGGER = "relay"
# Loggers whose repeated records are folded: the SDK (its Rust core logs through it).
FOLDED_LOGGERS = ("livekit",)
FOLD_WINDOW_S = 60.0
FOLD_MAX_KINDS = 1000  # distinct records remembered; more and the memory starts over


class RepeatFolder(logging.Filter):
    """One record per kind (the message with its numbers blanked) per FOLD_WINDOW_S; the
    next one let through carries `folded`, how many were held back since."""

    def __init__(self, window_s: float = FOLD_WINDOW_S) -> None:
        super().__init__()
        self._window_s = window_s
        self._lock = threading.Lock()
        self._kinds: dict[str, tuple[float, int]] = {}  # kind -> (let through at, held)

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(FOLDED_LOGGERS):
            return True
        kind = f"{record.levelno}:" + re.sub(r"\d+", "#", record.getMessage()[:200])
        now = time.monotonic()
        with self._lock:
            if len(self._kinds) > FOLD_MAX_KINDS:
                self._kinds.clear()
            since, held = self._kinds.get(kind, (0.0, 0))
            if since and now - since < self._window_s:
                self._kinds[kind] = (since, held + 1)
                return False
            self._kinds[kind] = (now, 0)
        if held:
            record.folded = held
        return True


def configure_logging(level: str = "info", fmt: LogFormat = "auto") -> None:
    """Configure structlog to log through stdlib logging, and the one handler."""
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    numeric_level = logging.getLevelNamesMapping()[level.upper()]
    relay_logger = logging.getLogger(RELAY_LOGGER)
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        # Every structlog logger is the one stdlib logger: its name is not in the record.
        logger_factory=lambda *args: relay_logger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RepeatFolder())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=[
                *shared,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(allow=["folded"]),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    logging.captureWarnings(True)  # a library's warning is a record too, not two raw lines
    relay_logger.setLevel(numeric_level)
    # The SDK logs at INFO for every ignored stream; libraries stay at WARNING or above.
    root.setLevel(max(numeric_level, logging.WARNING))
