"""A stand-in for LiveAvatar's session API, enough for `@heygen/liveavatar-web-sdk`'s
`LiveAvatarSession` (pointed at the dev server with its `apiUrl` option) to start a
FULL-mode session in a dev server room.

- `POST /v1/sessions/start`: the session token (`Authorization: Bearer`) is a dev server
  join token; the answer gives it back as `livekit_client_token`, with the dev server's
  `livekit_url` and a `session_id` (the token's metadata `liveavatar_session_id`, else a
  new one). The SDK then joins the room as the token says.
- `POST /v1/sessions/stop`, `POST /v1/sessions/keep-alive`: acknowledged.

No `ws_url` is given: FULL mode runs over the LiveKit room alone. The SDK fetches with
`credentials: "include"`, so CORS answers name the page's origin and allow credentials.
Answers have LiveAvatar's envelope: `{"code": 1000, "data": ...}`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable

from aiohttp import web

from relay.dev.server.auth import Authenticator, AuthError, request_token

SUCCESS_CODE = 1000


class LiveAvatarApi:
    def __init__(self, auth: Authenticator, ws_url: Callable[[], str]) -> None:
        self._auth = auth
        self._ws_url = ws_url

    def add_routes(self, app: web.Application) -> None:
        for path in ("/v1/sessions/start", "/v1/sessions/stop", "/v1/sessions/keep-alive"):
            app.router.add_route("OPTIONS", path, self.preflight)
        app.router.add_post("/v1/sessions/start", self.start)
        app.router.add_post("/v1/sessions/stop", self.acknowledge)
        app.router.add_post("/v1/sessions/keep-alive", self.acknowledge)

    async def preflight(self, request: web.Request) -> web.Response:
        headers = _cors(request)
        headers["Access-Control-Allow-Methods"] = "POST"
        headers["Access-Control-Allow-Headers"] = "authorization, content-type"
        return web.Response(status=204, headers=headers)

    async def start(self, request: web.Request) -> web.Response:
        token = request_token(request)
        try:
            grant = self._auth.join_grant(token)
        except AuthError as exc:
            body = {"code": exc.status, "message": exc.message}
            return web.json_response(body, status=exc.status, headers=_cors(request))
        data = {
            "session_id": _session_id(grant.metadata),
            "max_session_duration": None,
            "livekit_url": self._ws_url(),
            "livekit_client_token": token,
        }
        return web.json_response({"code": SUCCESS_CODE, "data": data}, headers=_cors(request))

    async def acknowledge(self, request: web.Request) -> web.Response:
        return web.json_response({"code": SUCCESS_CODE, "data": {}}, headers=_cors(request))


def _session_id(metadata: str) -> str:
    try:
        given = json.loads(metadata).get("liveavatar_session_id") if metadata else None
    except (ValueError, AttributeError):
        given = None
    return given if isinstance(given, str) and given else uuid.uuid4().hex[:8]


def _cors(request: web.Request) -> dict[str, str]:
    origin = request.headers.get("Origin")
    if origin is None:
        return {}
    return {"Access-Control-Allow-Origin": origin, "Access-Control-Allow-Credentials": "true"}
