"""The dev server process: one aiohttp app for signalling, Twirp and the debug call."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from aiohttp import web

from relay.dev.server.auth import Authenticator
from relay.dev.server.liveavatar_api import LiveAvatarApi
from relay.dev.server.peer import check_bind_address, pin_ice_address
from relay.dev.server.room import RoomManager
from relay.dev.server.signal import SignalHandler
from relay.dev.server.twirp import RoomService
from relay.dev.server.webhooks import WebhookNotifier

log = structlog.get_logger("relay.dev.server")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7880
READY_LINE = "devserver ready"


@dataclass(frozen=True)
class DevServerConfig:
    """Everything the dev server is told at start; units in the names."""

    api_key: str
    api_secret: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    webhook_urls: tuple[str, ...] = ()
    # A room whose last participant left finishes after this (livekit-server: 20 s).
    departure_timeout_s: float = 20.0
    # A room created through the API that nobody joins finishes after this (300 s).
    empty_timeout_s: float = 300.0
    # Not LiveKit: lets tests and tools set active speakers (no audio analysis here).
    debug_api: bool = True


class DevServer:
    """A LiveKit-protocol development server; `start()`, then `stop()`."""

    def __init__(self, config: DevServerConfig) -> None:
        if not config.api_key or not config.api_secret:
            raise ValueError("the dev server needs an API key and secret")
        check_bind_address(config.host)
        self.config = config
        self.auth = Authenticator(config.api_key, config.api_secret)
        self.webhooks = WebhookNotifier(config.webhook_urls, self.auth)
        self.rooms = RoomManager(
            self.webhooks,
            departure_timeout_s=config.departure_timeout_s,
            empty_timeout_s=config.empty_timeout_s,
        )
        self._runner: web.AppRunner | None = None
        self.port = config.port

    def app(self) -> web.Application:
        signalling = SignalHandler(self.auth, self.rooms)
        service = RoomService(self.auth, self.rooms)
        app = web.Application()
        app.router.add_get("/", _health)
        app.router.add_get("/rtc", signalling.rtc)
        app.router.add_get("/rtc/validate", signalling.validate)
        app.router.add_get("/rtc/v1", signalling.v1)
        app.router.add_get("/rtc/v1/validate", signalling.v1)
        app.router.add_post("/twirp/livekit.RoomService/{method}", service.handle)
        if self.config.debug_api:
            app.router.add_post("/devserver/active_speakers", service.active_speakers)
        # LiveAvatar's session API, for @heygen/liveavatar-web-sdk pages (liveavatar_api.py).
        LiveAvatarApi(self.auth, lambda: self.ws_url).add_routes(app)
        return app

    @property
    def ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.port}"

    async def start(self) -> None:
        """Bind and serve; with port 0, `port` is the one the kernel chose."""
        pin_ice_address(self.config.host)
        self.webhooks.start()
        self._runner = web.AppRunner(self.app(), handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port)
        await site.start()
        if self.config.port == 0:
            # One site bound to one address: its (host, port, ...) is the only entry.
            self.port = int(self._runner.addresses[0][1])
        log.info("devserver.started", url=self.ws_url)

    async def stop(self) -> None:
        """Tell clients to come back later, send the last webhooks, close."""
        await self.rooms.close_all()
        await self.webhooks.drain()
        await self.webhooks.aclose()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        log.info("devserver.stopped")


async def _health(request: web.Request) -> web.Response:
    return web.Response(text="OK")


async def serve(
    host: str,
    port: int,
    api_key: str,
    api_secret: str,
    webhook_urls: Sequence[str] = (),
    *,
    departure_timeout_s: float = 20.0,
    empty_timeout_s: float = 300.0,
    stop: asyncio.Event | None = None,
) -> None:
    """Run a dev server until `stop` is set (or SIGTERM/SIGINT when none is given).

    Prints `devserver ready url=ws://HOST:PORT` on stdout once it accepts connections.
    A development and test tool, not an SFU: see docs/devserver.md.
    """
    config = DevServerConfig(
        api_key=api_key,
        api_secret=api_secret,
        host=host,
        port=port,
        webhook_urls=tuple(webhook_urls),
        departure_timeout_s=departure_timeout_s,
        empty_timeout_s=empty_timeout_s,
    )
    server = DevServer(config)
    if stop is None:
        stop = asyncio.Event()
        _stop_on_signals(stop)
    await server.start()
    try:
        print(f"{READY_LINE} url={server.ws_url}", flush=True, file=sys.stdout)
        await stop.wait()
    finally:
        await server.stop()


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
