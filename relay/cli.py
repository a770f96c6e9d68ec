"""The `relay` command: run, check, token, ingest-token, tail, demo, devserver, and the
conversation analytics: analytics, sessions, transcript, report.

Settings are parsed once here and passed down; a configuration error names the variable
and exits with status 2. The exit statuses of `relay run` are listed in relay/worker.py.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from relay import __version__
from relay.config import Settings, load_settings
from relay.errors import ConfigError, StartError
from relay.logs import configure_logging

EXIT_CONFIG = 2


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
        settings = load_settings(args.config, **_overrides(args))
    except ConfigError as exc:
        print(f"relay: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log.level, settings.log.format)
    handler = _COMMANDS[args.command]
    return handler(settings, args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay", description=__doc__)
    parser.add_argument("--version", action="version", version=f"relay {__version__}")
    parser.add_argument("--config", type=Path, help="TOML file (environment RELAY_* wins)")
    sub = parser.add_subparsers(dest="command")

    run = sub.add_parser("run", help="observe rooms and relay their events")
    run.add_argument("--room", action="append", default=[], help="room to observe (repeat)")
    run.add_argument("--sink", action="append", choices=["redis", "stdout"], default=[])
    run.add_argument("--workers", type=int, help="worker processes (relay/supervisor.py)")

    sub.add_parser("check", help="validate configuration, reach LiveKit and Redis")

    token = sub.add_parser("token", help="mint a hidden, receive-only observer token")
    token.add_argument("--room", required=True)
    token.add_argument("--identity", help="default: the observer identity template")

    ingest = sub.add_parser("ingest-token", help="mint a browser ingest token (one session)")
    ingest.add_argument("--room", required=True)
    ingest.add_argument("--session", required=True)
    ingest.add_argument("--ttl", default="1h", help="lifetime: seconds, or 15m, 1h, 1d (1h)")
    ingest.add_argument("--origin", help="the only browser origin that may use it")

    tail = sub.add_parser("tail", help="follow the event stream, one line per event")
    tail.add_argument("--room", help="follow one room's stream")
    tail.add_argument("--from-start", action="store_true", help="print what is there first")
    tail.add_argument("--count", type=int, help="exit after this many events")
    tail.add_argument("--json", action="store_true", help="print the raw event JSON")
    tail.add_argument(
        "--transcripts", action="store_true", help="follow finalized utterances, not events"
    )
    tail.add_argument(
        "--prefix", type=_prefix, help="key prefix (default RELAY_REDIS__PREFIX, else relay)"
    )
    _analytics_parsers(sub)

    demo_help = "everything on one machine: dev server, avatar, relay (needs relay[devkit])"
    demo = sub.add_parser("demo", help=demo_help)
    demo.add_argument("--seconds", type=float, default=0, help="stop after this long (0: Ctrl-C)")

    # Listed for --help only: main() hands `relay devserver ...` to relay.dev.server.
    sub.add_parser("devserver", help="the LiveKit-protocol dev server (testing; relay[devkit])")
    return parser


def _analytics_parsers(sub: Any) -> None:
    prefix: dict[str, Any] = {"type": _prefix, "help": "key prefix (default relay)"}
    sub.add_parser("analytics", help="assemble transcripts and session summaries (a group)")
    sessions = sub.add_parser("sessions", help="recent session summaries, as a table")
    sessions.add_argument("--count", type=int, default=20)
    sessions.add_argument("--prefix", **prefix)
    transcript = sub.add_parser("transcript", help="a session's transcript, with latencies")
    transcript.add_argument("name", help="session id, or room (its latest session)")
    transcript.add_argument("--prefix", **prefix)
    report = sub.add_parser("report", help="a session's report page, self-contained HTML")
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
    from relay.worker import EXIT_FAILED, run_worker

    if settings.workers > 1:
        from relay.supervisor import run_supervisor

        return asyncio.run(run_supervisor(settings, _without_workers(args.words)))
    try:
        return asyncio.run(run_worker(settings))
    except StartError as exc:  # the worker has shut down; one line, no traceback
        print(f"relay: {exc}", file=sys.stderr)
        return EXIT_FAILED


def _check(settings: Settings, args: argparse.Namespace) -> int:
    from relay.checks import run_checks

    return asyncio.run(run_checks(settings))


def _token(settings: Settings, args: argparse.Namespace) -> int:
    from relay.observer.token import mint_observer_token, next_observer_identity

    if not settings.livekit.can_mint_tokens:
        message = "RELAY_LIVEKIT__API_KEY and RELAY_LIVEKIT__API_SECRET are required"
        print(f"relay: {message}", file=sys.stderr)
        return EXIT_CONFIG
    identity = args.identity or next_observer_identity(settings.livekit.observer_identity)
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

    return asyncio.run(run_analytics(settings))


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
