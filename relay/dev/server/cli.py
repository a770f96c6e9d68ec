"""Command line of the dev server: `python -m relay.dev.server` or `relay devserver`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Sequence

from relay.dev.server.peer import check_bind_address
from relay.dev.server.server import DEFAULT_HOST, DEFAULT_PORT, serve
from relay.dev.server.webrtc_internals import InternalsChanged
from relay.dev.server.webrtc_internals import check as check_internals
from relay.logs import configure_logging


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="relay devserver",
        description=(
            "LiveKit-protocol development server (data channels only; not an SFU). "
            "Binds to loopback by default: run it inside a network namespace and bind "
            "the namespace's address for WebRTC clients (docs/devserver.md)."
        ),
    )
    p.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port (default 7880; 0: any)")
    p.add_argument("--api-key", default=os.environ.get("LIVEKIT_API_KEY", ""))
    p.add_argument(
        "--api-secret",
        default=os.environ.get("LIVEKIT_API_SECRET", ""),
        help="API secret (or LIVEKIT_API_SECRET; prefer the variable: argv is visible)",
    )
    p.add_argument(
        "--webhook", action="append", default=[], metavar="URL", help="webhook URL (repeatable)"
    )
    p.add_argument(
        "--departure-timeout",
        type=float,
        default=20.0,
        metavar="SECONDS",
        help="close a room this long after its last participant left (default 20)",
    )
    p.add_argument(
        "--empty-timeout",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="close a room created by the API that nobody joined (default 300)",
    )
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the dev server until SIGTERM/SIGINT; returns the exit code."""
    args = parser().parse_args(argv)
    if not args.api_key or not args.api_secret:
        parser().error("--api-key and --api-secret (or LIVEKIT_API_KEY/SECRET) are required")
    try:
        check_bind_address(args.host)
    except ValueError as exc:
        parser().error(str(exc))
    configure_logging(args.log_level)
    # A client's trickled ICE candidate can arrive before its answer: aiortc warns and drops
    # it, and the candidates in the SDP carry the connection anyway (one address here).
    logging.getLogger("aiortc.rtcpeerconnection").setLevel(logging.ERROR)
    try:
        check_internals()  # an untested aiortc/aioice version logs a warning (stderr)
    except InternalsChanged as exc:
        parser().exit(2, f"relay devserver: {exc}\n")
    asyncio.run(
        serve(
            args.host,
            args.port,
            args.api_key,
            args.api_secret,
            args.webhook,
            departure_timeout_s=args.departure_timeout,
            empty_timeout_s=args.empty_timeout,
        )
    )
    return 0
