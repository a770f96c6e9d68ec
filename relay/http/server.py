"""One aiohttp server for operators and backends.

- `GET /metrics`: Prometheus text format.
- `GET /healthz`: the process is alive (the event loop answers).
- `GET /readyz`: Redis answers, every room of the static list is observed, and no room
  added through the admin API has failed to connect for longer than `unready_after_s`
  (a room that cannot join must be seen; shorter failures are the re-join backoff's).
  The body has the state and last error of each room this process observes (as
  `GET /v1/rooms` without discovery), in both modes.
- `GET|POST /v1/rooms`, `DELETE /v1/rooms/{room}`: the admin API, bearer token. A room
  name is 1-256 characters (LiveKit's limit), no control characters; a body with a field
  other than room, url, token is refused (400 naming it). `GET /v1/rooms` lists this
  process's rooms; with discovery on, the whole deployment's instead, a page of
  `?limit=` (1-5000, default 1000) rooms after `?cursor=` (the previous page's
  `next_cursor`), and which process answered (relay/discovery/deployment.py).
- `GET /v1/sessions/{id}` and `/v1/sessions/{id}/report`: session summaries and their
  report page (relay/analytics/http.py), bearer token.
"""

from __future__ import annotations

import errno
import hmac
import json
import os
import unicodedata
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from relay.analytics.http import add_session_routes
from relay.analytics.views import SessionReader
from relay.errors import StartError
from relay.observer import RoomTarget
from relay.rooms import (
    DeploymentUnavailableError,
    RoomCapacityError,
    RoomManager,
    ShuttingDownError,
)

log = structlog.get_logger(__name__)

ReadinessCheck = Callable[[], Awaitable[dict[str, bool]]]
MAX_ADMIN_BODY_BYTES = 64 * 1024
MAX_ROOM_NAME_CHARS = 256
ROOM_FIELDS = ("room", "url", "token")
# Admin-API rooms failing to connect this long make /readyz 503: longer than a few
# re-join attempts (RELAY_LIVEKIT__REJOIN_BACKOFF_*), so one failed connect does not flap.
UNREADY_AFTER_S = 30.0
# A page of `GET /v1/rooms` with discovery on (the summary always covers every room).
DEFAULT_ROOMS_LIMIT = 1000
MAX_ROOMS_LIMIT = 5000
# Requests still in flight when the server closes get this long (aiohttp's default is 60 s,
# which would leave the worker's shutdown unbounded).
CLOSE_TIMEOUT_S = 2.0

MANAGER_KEY = web.AppKey("manager", RoomManager)
READINESS_KEY: web.AppKey[ReadinessCheck] = web.AppKey("readiness")
ADMIN_TOKEN_KEY = web.AppKey("admin_token", str)
MINTS_TOKENS_KEY = web.AppKey("mints_tokens", bool)
UNREADY_AFTER_KEY = web.AppKey("unready_after_s", float)


def build_app(
    manager: RoomManager,
    readiness: ReadinessCheck,
    admin_token: str,
    *,
    mints_tokens: bool,
    sessions: SessionReader | None = None,
    unready_after_s: float = UNREADY_AFTER_S,
) -> web.Application:
    """`mints_tokens`: the relay has the LiveKit API key and secret, so a room may come
    without a url+token pair."""
    app = web.Application(client_max_size=MAX_ADMIN_BODY_BYTES)
    app[UNREADY_AFTER_KEY] = unready_after_s
    app[MANAGER_KEY] = manager
    app[READINESS_KEY] = readiness
    app[ADMIN_TOKEN_KEY] = admin_token
    app[MINTS_TOKENS_KEY] = mints_tokens
    app.router.add_get("/metrics", metrics_handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/v1/rooms", list_rooms)
    app.router.add_post("/v1/rooms", add_room)
    app.router.add_delete("/v1/rooms/{room}", remove_room)
    add_session_routes(app, sessions, _authorized)
    return app


async def metrics_handler(request: web.Request) -> web.Response:
    body = generate_latest()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    checks = await request.app[READINESS_KEY]()
    manager = request.app[MANAGER_KEY]
    failing = manager.failing_rooms(request.app[UNREADY_AFTER_KEY])
    checks["admin_rooms"] = not failing
    status = 200 if all(checks.values()) else 503
    body = {"ready": status == 200, "checks": checks, "rooms": manager.describe()}
    return web.json_response(body, status=status)


def _authorized(request: web.Request) -> None:
    expected = request.app[ADMIN_TOKEN_KEY]
    if not expected:
        raise _error(web.HTTPNotFound, "the admin API is disabled (set RELAY_HTTP__ADMIN_TOKEN)")
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
        raise _error(web.HTTPUnauthorized, "missing or wrong bearer token")


async def list_rooms(request: web.Request) -> web.Response:
    _authorized(request)
    manager = request.app[MANAGER_KEY]
    limit, cursor = _page(request)
    try:
        deployment = await manager.describe_deployment(limit=limit, cursor=cursor)
    except DeploymentUnavailableError as exc:
        # What this process knows still helps; the 503 says the rest is missing.
        body = {"error": str(exc), "answered_by": exc.answered_by, "rooms": manager.describe()}
        return web.json_response(body, status=503)
    if deployment is None:  # discovery off: this process is the deployment
        return web.json_response({"rooms": manager.describe()})
    return web.json_response(deployment)


def _page(request: web.Request) -> tuple[int, str | None]:
    """`?limit=` and `?cursor=` of `GET /v1/rooms` (used with discovery on)."""
    raw = request.query.get("limit")
    limit = DEFAULT_ROOMS_LIMIT
    if raw is not None:
        limit = int(raw) if raw.isdigit() else 0
        if not 1 <= limit <= MAX_ROOMS_LIMIT:
            message = f"'limit' must be an integer from 1 to {MAX_ROOMS_LIMIT}, not {raw!r}"
            raise _error(web.HTTPBadRequest, message)
    cursor = request.query.get("cursor")
    if cursor is not None and (problem := room_name_problem(cursor)):
        raise _error(web.HTTPBadRequest, f"'cursor' (a room name): {problem}")
    return limit, cursor or None


async def add_room(request: web.Request) -> web.Response:
    _authorized(request)
    target = _parse_target(await _json_body(request))
    if target.token is None and not request.app[MINTS_TOKENS_KEY]:
        message = "this relay has no LiveKit API key/secret to mint a token: give 'url' and 'token'"
        raise _error(web.HTTPBadRequest, message)
    try:
        added = request.app[MANAGER_KEY].want(target)
    except RoomCapacityError as exc:
        raise _error(web.HTTPTooManyRequests, str(exc)) from None
    except ShuttingDownError as exc:
        raise _error(web.HTTPServiceUnavailable, str(exc)) from None
    log.info("admin_room_added", room=target.room, added=added)
    return web.json_response({"room": target.room, "added": added}, status=201 if added else 200)


async def remove_room(request: web.Request) -> web.Response:
    _authorized(request)
    room = request.match_info["room"]
    if not await request.app[MANAGER_KEY].unwant(room):
        raise _error(web.HTTPNotFound, f"room {room!r} is not observed")
    log.info("admin_room_removed", room=room)
    return web.json_response({"room": room, "removed": True})


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise _error(web.HTTPBadRequest, "body must be a JSON object") from None
    if not isinstance(body, dict):
        raise _error(web.HTTPBadRequest, "body must be a JSON object")
    return body


def _parse_target(body: dict[str, Any]) -> RoomTarget:
    unknown = sorted(set(body) - set(ROOM_FIELDS))
    if unknown:
        names = ", ".join(repr(name) for name in unknown)
        raise _error(web.HTTPBadRequest, f"unknown field {names}; a room takes room, url, token")
    room, url, token = body.get("room"), body.get("url"), body.get("token")
    if not isinstance(room, str) or not room.strip():
        raise _error(web.HTTPBadRequest, "'room' must be a non-empty string")
    if problem := room_name_problem(room):
        raise _error(web.HTTPBadRequest, f"'room': {problem}")
    if (url is None) != (token is None):
        raise _error(web.HTTPBadRequest, "'url' and 'token' go together")
    if url is not None and not (isinstance(url, str) and url and isinstance(token, str) and token):
        raise _error(web.HTTPBadRequest, "'url' and 'token' must be non-empty strings")
    return RoomTarget(room=room, url=url, token=token)


def room_name_problem(room: str) -> str | None:
    """Why `room` cannot be a room name, or None (names go into logs, keys and metrics)."""
    if len(room) > MAX_ROOM_NAME_CHARS:
        return f"{len(room)} characters; at most {MAX_ROOM_NAME_CHARS}"
    if any(unicodedata.category(char) == "Cc" for char in room):
        return "contains a control character (newline, tab, ...)"
    return None


def _error(kind: type[web.HTTPError], message: str) -> web.HTTPError:
    return kind(text=json.dumps({"error": message}), content_type="application/json")


class HttpServer:
    """Owns the aiohttp runner; `start()` binds (StartError if it cannot), `stop()` closes."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=CLOSE_TIMEOUT_S)
        self._host = host
        self._port = port
        self.bound_port: int | None = None

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        try:
            await site.start()
        except OSError as exc:  # taken, not permitted, not an address of this host
            raise StartError(_cannot_listen(self._host, self._port, exc)) from None
        addresses = self._runner.addresses  # (host, port, ...) of each listening socket
        self.bound_port = addresses[0][1] if addresses else self._port
        log.info("http_listening", host=self._host, port=self.bound_port)

    async def stop(self) -> None:
        if self._runner.server is not None:  # set up (start() may have failed after)
            await self._runner.cleanup()


def _cannot_listen(host: str, port: int, exc: OSError) -> str:
    """One line naming what to change: the port if it is taken or not permitted, else the
    host (a name that does not resolve, an address this host does not have)."""
    errno_ = exc.errno if isinstance(exc.errno, int) else 0
    # asyncio words a failed bind as "error while attempting to bind on address ...";
    # the errno's own text is the part worth reading.
    reason = os.strerror(errno_).lower() if errno_ > 0 else exc.strerror or str(exc)
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if errno_ in (errno.EADDRINUSE, errno.EACCES):
        hint = "set RELAY_HTTP__PORT (toml: http.port) to a free port"
    else:
        hint = "check RELAY_HTTP__HOST (toml: http.host)"
    return f"cannot listen on {address}: {reason}; {hint}"
