"""The `relay` command: run, check, token, ingest-token, tail, demo, devserver, and the
conversation analytics: analytics, sessions, transcript, report.

Settings are parsed once here and passed down. Every error is one line on stderr naming
what to fix, with these exit statuses (the full list of `relay run`'s is in
relay/worker.py): 2 the configuration or the command line is wrong, 1 something failed
at run time (Redis down, the port taken). `--debug` adds the traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from relay import __version__
from relay.config import Settings, load_settings
from relay.errors import ConfigError, StartError
from relay.logs import configure_logging

EXIT_RUNTIME = 1
EXIT_CONFIG = 2

DESCRIPTION = (
    "Observe LiveKit rooms and relay their data-channel events to Redis Streams. "
    "Settings come from RELAY_* environment variables over a TOML file (--config)."
)
EPILOG = (
    "exit status: 0 done, 1 failed at run time (LiveKit or Redis unreachable, port taken), "
    "2 bad configuration or command line. Add --debug for a traceback."
)


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, exit status 2 (argparse prints the usage block)."""

    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_CONFIG)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if words[:1] == ["devserver"]:
        # The dev server has its own options (and --help): hand it everything after.
        return _devserver(words[1:])
    parser = _parser()
    args = parser.parse_args(words)
    args.words = words
    if args.command is None:
        parser.print_help()
        return EXIT_CONFIG
    if args.command == "devserver":  # reached only with options before it (--config)
        print("relay: use `relay devserver [options]`; it takes no --config", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return _dispatch(args)
    except KeyboardInterrupt:
        return EXIT_RUNTIME
    except Exception as exc:  # a bug or an error not foreseen: one line unless --debug
        if args.debug:
            traceback.print_exc()
        else:
            print(f"relay: {type(exc).__name__}: {exc} (--debug shows where)", file=sys.stderr)
        return EXIT_RUNTIME


def _dispatch(args: argparse.Namespace) -> int:
    rooms_option = "--room" if args.command == "run" and args.room else None
    try:
        settings = load_settings(args.config, rooms_option=rooms_option, **_overrides(args))
    except ConfigError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log.level, settings.log.format)
    handler = _COMMANDS[args.command]
    return handler(settings, args)


def _common(parser: argparse.ArgumentParser, default: Any) -> None:
    """Options every subcommand takes too (`relay check --config x`); a subcommand's copy
    keeps the top-level value unless given (`default` = SUPPRESS)."""
    parser.add_argument(
        "--config",
        type=Path,
        default=default if default is argparse.SUPPRESS else None,
        help="TOML settings file (RELAY_* environment variables win over it)",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default if default is argparse.SUPPRESS else False,
        help="show the traceback of an error",
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="relay", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    _common(parser, None)
    common = _Parser(add_help=False)
    _common(common, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, text: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=text, description=text, parents=[common])

    run = add("run", "observe rooms and write their events to Redis (or stdout)")
    run.add_argument("--room", action="append", default=[], help="a room to observe (repeat)")
    run.add_argument(
        "--sink", action="append", choices=["redis", "stdout"], default=[], help="where to write"
    )
    run.add_argument("--workers", type=int, help="worker processes for this pod (needs discovery)")

    check = add("check", "check the configuration and that LiveKit and Redis answer")
    check.add_argument("--json", action="store_true", help="print the result as JSON")

    ingest = add("ingest-token", "mint a browser ingest token for one room and session")
    ingest.add_argument("--room", required=True, help="the room the token may post for")
    ingest.add_argument("--session", required=True, help="the session it may post for")
    ingest.add_argument("--ttl", default="1h", help="lifetime: seconds, or 15m, 1h, 1d (1h)")
    ingest.add_argument("--origin", help="the only browser origin that may use it")

    token = add("token", "print a hidden, receive-only token for the relay's observer")
    token.add_argument("--room", required=True, help="the room the token admits to")
    token.add_argument(
        "--identity", help="participant identity (default: RELAY_LIVEKIT__OBSERVER_IDENTITY)"
    )

    tail = add("tail", "print the events written to Redis as they arrive, one line each")
    tail.add_argument("--room", help="follow one room's stream (in seq order)")
    tail.add_argument("--from-start", action="store_true", help="print what is there first")
    tail.add_argument("--count", type=int, help="exit after this many events")
    tail.add_argument("--json", action="store_true", help="print each event's JSON as stored")
    tail.add_argument(
        "--transcripts", action="store_true", help="follow finalized utterances, not events"
    )
    tail.add_argument(
        "--prefix", type=_prefix, help="key prefix (default RELAY_REDIS__PREFIX, else relay)"
    )
    _analytics_parsers(add)

    demo = add("demo", "run everything on this machine: a dev LiveKit, an avatar, the relay")
    demo.add_argument("--seconds", type=float, default=0, help="stop after this long (0: Ctrl-C)")

    # Listed for --help only: main() hands `relay devserver ...` to relay.dev.server.
    sub.add_parser("devserver", help="a LiveKit-protocol server for tests (needs relay[devkit])")
    return parser


def _analytics_parsers(add: Callable[[str, str], argparse.ArgumentParser]) -> None:
    prefix: dict[str, Any] = {"type": _prefix, "help": "key prefix (default relay)"}
    add("analytics", "assemble transcripts and one summary per session (a consumer group)")
    sessions = add("sessions", "recent session summaries, as a table")
    sessions.add_argument("--count", type=int, default=20)
    sessions.add_argument("--prefix", **prefix)
    transcript = add("transcript", "a session's transcript, with per-turn latencies")
    transcript.add_argument("name", help="session id, or room (its latest session)")
    transcript.add_argument("--prefix", **prefix)
    report = add("report", "a session's report page, one self-contained HTML file")
    report.add_argument("session", help="session id, or room (its latest session)")
    report.add_argument("-o", "--output", type=Path, default=Path("report.html"))
    report.add_argument("--prefix", **prefix)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides: dict[str, Any] = {}
    if getattr(args, "room", None) and args.command == "run":
        overrides["rooms"] = tuple(args.room)
    if getattr(args, "workers", None) is not None and args.command == "run":
        overrides["workers"] = args.workers
    if getattr(args, "sink", None):
        overrides["sinks"] = tuple(args.sink)
    if getattr(args, "prefix", None):
        overrides["redis"] = {"prefix": args.prefix}  # merged with RELAY_REDIS__* and TOML
    return overrides


def _without_workers(words: Sequence[str]) -> list[str]:
    """The command line a worker of the supervisor runs: the same, minus --workers."""
    out: list[str] = []
    skip = False
    for word in words:
        if skip:
            skip = False
        elif word == "--workers":
            skip = True
        elif not word.startswith("--workers="):
            out.append(word)
    return out


def _prefix(value: str) -> str:
    if not value:
        raise argparse.ArgumentTypeError("must not be empty")
    return value


def _run(settings: Settings, args: argparse.Namespace) -> int:
    from relay.native_logs import NativeStderr
    from relay.observer.sdk_internals import keep_native_logs_native
    from relay.worker import EXIT_FAILED, run_worker

    if settings.workers > 1:
        from relay.supervisor import run_supervisor

        return asyncio.run(run_supervisor(settings, _without_workers(args.words)))
    if settings.livekit.native_logs == "native" and keep_native_logs_native():
        NativeStderr().start(settings.log.level, settings.log.format)  # before the SDK
    # What the process imported and built to start lives as long as it does: out of the
    # cyclic collector's sight, the full collection after rooms leave stays short
    # (relay/rooms/collector.py).
    gc.freeze()
    try:
        return asyncio.run(run_worker(settings))
    except StartError as exc:  # the worker has shut down; one line, no traceback
        print(f"relay: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _check(settings: Settings, args: argparse.Namespace) -> int:
    from relay.checks import run_checks

    return asyncio.run(run_checks(settings, as_json=args.json))


def _token(settings: Settings, args: argparse.Namespace) -> int:
    from relay.observer.token import mint_observer_token, next_observer_identity

    if not settings.livekit.can_mint_tokens:
        message = "RELAY_LIVEKIT__API_KEY and RELAY_LIVEKIT__API_SECRET: required to mint a token"
        print(f"relay: {message}", file=sys.stderr)
        return EXIT_CONFIG
    template = settings.livekit.observer_identity
    identity = args.identity or next_observer_identity(template, worker=settings.worker_index)
    secret = settings.livekit.api_secret.get_secret_value()
    ttl_s = settings.livekit.observer_token_ttl_s
    print(mint_observer_token(settings.livekit.api_key, secret, args.room, identity, ttl_s))
    return 0


def _ingest_token(settings: Settings, args: argparse.Namespace) -> int:
    from relay.ingest.tokens import mint_ingest_token, parse_ttl_s

    secret = settings.ingest.secret.get_secret_value()
    if not secret:
        print("relay: RELAY_INGEST__SECRET (toml: ingest.secret) is required", file=sys.stderr)
        return EXIT_CONFIG
    try:
        ttl_s = parse_ttl_s(args.ttl)
        token = mint_ingest_token(
            secret, room=args.room, session=args.session, ttl_s=ttl_s, origin=args.origin
        )
    except ValueError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    print(token)
    return 0


def _tail(settings: Settings, args: argparse.Namespace) -> int:
    from relay.tail import tail

    try:
        return asyncio.run(
            tail(
                settings,
                args.room,
                args.from_start,
                args.count,
                args.json,
                transcripts=args.transcripts,
            )
        )
    except KeyboardInterrupt:
        return 0


def _analytics(settings: Settings, args: argparse.Namespace) -> int:
    from relay.analytics.service import run_analytics

    try:
        return asyncio.run(run_analytics(settings))
    except ConfigError as exc:  # analytics.otel on, and its extra not installed
        print(f"relay analytics: {exc}", file=sys.stderr)
        return EXIT_CONFIG


def _sessions(settings: Settings, args: argparse.Namespace) -> int:
    from relay.analytics.commands import sessions_command

    return asyncio.run(sessions_command(settings, args.count))


def _transcript(settings: Settings, args: argparse.Namespace) -> int:
    from relay.analytics.commands import transcript_command

    return asyncio.run(transcript_command(settings, args.name))


def _report(settings: Settings, args: argparse.Namespace) -> int:
    from relay.analytics.commands import report_command

    return asyncio.run(report_command(settings, args.session, args.output))


# The dev toolkit is imported only here, and only when its extra (aiortc) is installed:
# `relay run` never loads it.


def _without_devkit(command: str) -> bool:
    """True (after saying what to install, in one line) when the devkit extra is absent."""
    from relay.dev.extra import missing_extra

    message = missing_extra(command)
    if message is not None:
        print(message, file=sys.stderr)
    return message is not None


def _demo(settings: Settings, args: argparse.Namespace) -> int:
    if _without_devkit("demo"):
        return EXIT_CONFIG
    from relay.dev.demo import run_demo

    status: int = run_demo(settings, seconds=args.seconds, config=args.config)
    return status


def _devserver(argv: list[str]) -> int:
    if _without_devkit("devserver"):
        return EXIT_CONFIG
    from relay.dev.server import main as devserver_main

    return devserver_main(argv)


_COMMANDS = {
    "run": _run,
    "check": _check,
    "token": _token,
    "ingest-token": _ingest_token,
    "tail": _tail,
    "demo": _demo,
    "analytics": _analytics,
    "sessions": _sessions,
    "transcript": _transcript,
    "report": _report,
}


if __name__ == "__main__":
    sys.exit(main())
