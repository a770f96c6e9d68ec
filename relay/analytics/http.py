"""`GET /v1/sessions/{id}/report` (the report page) and `GET /v1/sessions/{id}` (the
summary), read-only, behind the admin token. relay.http.server adds them with
`add_session_routes`; the check of the token is the server's, handed in."""

from __future__ import annotations

import json
from collections.abc import Callable

from aiohttp import web

from relay.analytics.report import render_report
from relay.analytics.views import SessionReader

SESSIONS_KEY = web.AppKey("sessions", SessionReader)


def add_session_routes(
    app: web.Application,
    sessions: SessionReader | None,
    authorize: Callable[[web.Request], None],
) -> None:
    """`sessions` None (the relay writes no Redis): the routes say so with a 404."""

    async def summary(request: web.Request) -> web.Response:
        doc = await _find(request, sessions, authorize)
        return web.json_response(doc)

    async def report(request: web.Request) -> web.Response:
        doc = await _find(request, sessions, authorize)
        return web.Response(text=render_report(doc), content_type="text/html", charset="utf-8")

    app.router.add_get("/v1/sessions/{session_id}", summary)
    app.router.add_get("/v1/sessions/{session_id}/report", report)


async def _find(
    request: web.Request,
    sessions: SessionReader | None,
    authorize: Callable[[web.Request], None],
) -> dict[str, object]:
    authorize(request)
    if sessions is None:
        raise _not_found("session summaries need the redis sink (sinks = ['redis'])")
    session_id = request.match_info["session_id"]
    doc = await sessions.by_id(session_id)
    if doc is None:
        raise _not_found(f"no summary of session {session_id!r} (ended? expired?)")
    return doc


def _not_found(message: str) -> web.HTTPNotFound:
    return web.HTTPNotFound(text=json.dumps({"error": message}), content_type="application/json")
