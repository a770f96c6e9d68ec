"""`POST /v1/livekit/webhook`: LiveKit's room events feed the wanted set.

Verified with livekit-api's `WebhookReceiver(TokenVerifier(key, secret))` on the exact raw
body and the raw `Authorization` header: a bad or missing signature is 401 and changes
nothing; a body above `discovery.webhook_max_body_bytes` is 413. The answer goes out at
once (LiveKit waits on it); the wanted set is edited after, in a task. A replayed event
(the same `id` within REPLAY_WINDOW_S) is counted and ignored.

`room_started` makes a room wanted (if the filter passes it), `room_finished` releases it,
`participant_joined` only refreshes a wanted room (its reconcile miss count goes back to
0): a late participant event after `room_finished` must not bring a finished room back
(LiveKit creates a room on join, so the observer would resurrect it).
"""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web
from livekit import api
from livekit.protocol import webhook as webhook_pb

from relay import keys
from relay.discovery import metrics as m
from relay.discovery.filter import RoomFilter
from relay.discovery.wanted import WantedSet
from relay.observer import RoomTarget

log = structlog.get_logger(__name__)

PATH = "/v1/livekit/webhook"
REPLAY_WINDOW_S = 600
HANDLED = frozenset({"room_started", "room_finished", "participant_joined"})


class WebhookHandler:
    def __init__(
        self,
        wanted: WantedSet,
        room_filter: RoomFilter,
        api_key: str,
        api_secret: str,
        max_body_bytes: int,
    ) -> None:
        self._wanted = wanted
        self._filter = room_filter
        self._receiver = api.WebhookReceiver(api.TokenVerifier(api_key, api_secret))
        self._max_body_bytes = max_body_bytes
        self._work: set[asyncio.Task[None]] = set()

    async def handle(self, request: web.Request) -> web.Response:
        if request.content_length is not None and request.content_length > self._max_body_bytes:
            m.webhook_rejected("too_large")
            return _error(413, f"body above {self._max_body_bytes} bytes")
        body = await request.content.read(self._max_body_bytes + 1)
        if len(body) > self._max_body_bytes:
            m.webhook_rejected("too_large")
            return _error(413, f"body above {self._max_body_bytes} bytes")
        try:
            event = self._receiver.receive(body.decode("utf-8"), request.headers["Authorization"])
        except Exception as exc:  # the receiver raises plain Exceptions (and jwt's)
            m.webhook_rejected("signature" if _is_auth_error(exc) else "bad_body")
            log.warning("webhook_rejected", error=type(exc).__name__)
            if _is_auth_error(exc):
                return _error(401, "missing or bad webhook signature")
            return _error(400, "body is not a LiveKit webhook event")
        task = asyncio.create_task(self._apply(event))
        self._work.add(task)
        task.add_done_callback(self._work.discard)
        return web.json_response({"ok": True})

    async def _apply(self, event: webhook_pb.WebhookEvent) -> None:
        room = event.room.name
        try:
            if not room or event.event not in HANDLED:
                m.webhook_received("ignored")
                return
            seen = keys.webhook_seen_key(self._wanted._settings, event.id or "-")
            if event.id and not await self._wanted._redis.set(seen, 1, nx=True, ex=REPLAY_WINDOW_S):
                m.webhook_received("replayed")
                return
            if event.event == "room_finished":
                await self._wanted.remove(room)
            elif event.event == "participant_joined":
                await self._wanted.refresh(room)
            elif not self._filter.accepts(room, event.room.metadata):
                m.ROOMS_FILTERED.inc()
                m.webhook_received("filtered")
                return
            else:
                await self._wanted.add(RoomTarget(room=room), "webhook")
            m.webhook_received("applied")
            log.info("webhook_applied", webhook_event=event.event, room=room)
        except Exception as exc:  # Redis away: reconciliation finds the room later
            log.warning("webhook_apply_failed", room=room, error=repr(exc))


def _is_auth_error(exc: Exception) -> bool:
    return (
        isinstance(exc, KeyError | UnicodeDecodeError)
        or "hash mismatch" in str(exc)
        or ("sha256" in str(exc) or type(exc).__module__.startswith("jwt"))
    )


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def register_webhook(app: web.Application, handler: WebhookHandler) -> None:
    """Add the webhook route to the relay's HTTP app."""
    app.router.add_post(PATH, handler.handle)
