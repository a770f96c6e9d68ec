"""The ingest routes on relay's aiohttp app: `POST /v1/ingest` (+ its CORS preflight) and
`GET /v1/forwarder.js`. Nothing is logged per request or item; refusals are counted by
reason (`relay_ingest_rejected_total`)."""

from __future__ import annotations

import json
from importlib import resources

from aiohttp import web

from relay.ingest import metrics
from relay.ingest.batch import BatchError, parse_batch
from relay.ingest.service import IngestService, Refused
from relay.ingest.tokens import TokenError, verify_ingest_token

SERVICE_KEY = web.AppKey("ingest", IngestService)
PREFLIGHT_MAX_AGE_S = 600


def add_ingest_routes(app: web.Application, service: IngestService) -> None:
    app[SERVICE_KEY] = service
    app.router.add_post("/v1/ingest", ingest)
    app.router.add_route("OPTIONS", "/v1/ingest", preflight)
    app.router.add_get("/v1/forwarder.js", forwarder_js)


def forwarder_source() -> bytes:
    return resources.files("relay.ingest").joinpath("static/forwarder.js").read_bytes()


async def forwarder_js(request: web.Request) -> web.Response:
    headers = {"Access-Control-Allow-Origin": "*", "Cache-Control": "public, max-age=300"}
    return web.Response(body=forwarder_source(), content_type="text/javascript", headers=headers)


async def preflight(request: web.Request) -> web.Response:
    cors = _cors(request)
    if cors is None:
        return _refused(Refused(403, "origin_refused", "this origin may not post here"), {})
    cors["Access-Control-Allow-Methods"] = "POST"
    cors["Access-Control-Allow-Headers"] = "authorization, content-type"
    cors["Access-Control-Max-Age"] = str(PREFLIGHT_MAX_AGE_S)
    return web.Response(status=204, headers=cors)


async def ingest(request: web.Request) -> web.Response:
    service = request.app[SERVICE_KEY]
    cors = _cors(request)
    if cors is None:
        return _refused(Refused(403, "origin_refused", "this origin may not post here"), {})
    try:
        body = await _body(request, service.settings.max_body_bytes)
        batch = parse_batch(body, max_items=service.settings.max_items)
    except Refused as exc:
        return _refused(exc, cors)
    except BatchError as exc:
        status = 413 if exc.reason == "too_many_items" else 400
        return _refused(Refused(status, exc.reason, str(exc)), cors)
    given = _bearer(request) or batch.token or ""
    try:
        grant = verify_ingest_token(service.settings.secret.get_secret_value(), given)
        session = service.check(grant, batch, request.headers.get("Origin"))
    except TokenError as exc:
        return _refused(Refused(401, exc.problem, str(exc)), cors)
    except Refused as exc:
        return _refused(exc, cors)
    outcome = await service.ingest(session, batch)
    return web.json_response(outcome.to_dict(), headers=cors)


async def _body(request: web.Request, limit: int) -> bytes:
    too_large = Refused(413, "too_large", f"body above {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.content.iter_any():  # a body may arrive in many pieces
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _cors(request: web.Request) -> dict[str, str] | None:
    """The CORS headers for this request's Origin; None if the origin is refused. A request
    without an Origin (a backend, curl) needs none: the token is what authorizes."""
    origin = request.headers.get("Origin")
    if origin is None:
        return {}
    allowed = request.app[SERVICE_KEY].settings.allowed_origins
    if origin not in allowed and "*" not in allowed:
        return None
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Expose-Headers": "Retry-After",  # the forwarder's 429 backoff reads it
        "Vary": "Origin",
    }


def _refused(exc: Refused, cors: dict[str, str]) -> web.Response:
    metrics.rejected(exc.reason)
    headers = dict(cors)
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(exc.retry_after_s)
    body = json.dumps({"error": str(exc), "reason": exc.reason})
    return web.Response(
        status=exc.status, text=body, content_type="application/json", headers=headers
    )
