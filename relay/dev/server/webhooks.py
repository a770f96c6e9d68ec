"""Webhooks, signed as livekit-server signs them, so `WebhookReceiver` accepts them.

Each event is a `WebhookEvent` in protobuf JSON, POSTed with
`Content-Type: application/webhook+json` and `Authorization: <JWT>` (no "Bearer"),
a token signed with the API key/secret whose `sha256` claim is the base64 SHA-256 of
the body. One worker per URL keeps events in order; a full queue drops (counted in the
next event's `num_dropped`); a failed POST is retried a few times, then dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence

import aiohttp
import structlog
from google.protobuf.json_format import MessageToJson
from livekit.protocol import models, webhook

from relay.dev.server.auth import Authenticator
from relay.dev.server.participant import new_sid

log = structlog.get_logger("relay.dev.server.webhooks")

CONTENT_TYPE = "application/webhook+json"
QUEUE_MAX = 100
ATTEMPTS = 3
RETRY_WAIT_S = 0.5
POST_TIMEOUT_S = 5.0


class WebhookNotifier:
    """Queues events for every configured URL; `start()` and `aclose()` bracket its life."""

    def __init__(self, urls: Sequence[str], auth: Authenticator) -> None:
        self._urls = list(urls)
        self._auth = auth
        self._queues: list[asyncio.Queue[webhook.WebhookEvent]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._session: aiohttp.ClientSession | None = None
        self.dropped = 0
        self.sent = 0

    def start(self) -> None:
        if not self._urls:
            return
        timeout = aiohttp.ClientTimeout(total=POST_TIMEOUT_S)
        self._session = aiohttp.ClientSession(timeout=timeout)
        for url in self._urls:
            queue: asyncio.Queue[webhook.WebhookEvent] = asyncio.Queue(QUEUE_MAX)
            self._queues.append(queue)
            self._tasks.append(asyncio.create_task(self._worker(url, queue)))

    def notify(
        self,
        event: str,
        room: models.Room,
        participant: models.ParticipantInfo | None = None,
    ) -> None:
        """Queue `event` for every URL (never blocks; drops when a queue is full)."""
        message = webhook.WebhookEvent(
            event=event, room=room, id=new_sid("EV_"), created_at=int(time.time())
        )
        if participant is not None:
            message.participant.CopyFrom(participant)
        for queue in self._queues:
            try:
                queue.put_nowait(message)
            except asyncio.QueueFull:
                self.dropped += 1
                log.warning("devserver.webhook_dropped", webhook_event=event, reason="queue_full")

    async def _worker(self, url: str, queue: asyncio.Queue[webhook.WebhookEvent]) -> None:
        while True:
            event = await queue.get()
            try:
                event.num_dropped = self.dropped
                body = MessageToJson(event, indent=None).encode()
                if await self._post(url, body):
                    self.sent += 1
                    self.dropped = 0
            finally:
                queue.task_done()

    async def _post(self, url: str, body: bytes) -> bool:
        assert self._session is not None
        for attempt in range(1, ATTEMPTS + 1):
            headers = {
                "Authorization": self._auth.sign_webhook(body),
                "Content-Type": CONTENT_TYPE,
            }
            try:
                async with self._session.post(url, data=body, headers=headers) as response:
                    if response.status < 500:
                        return True
                    reason = f"status {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                reason = repr(exc)
            log.info("devserver.webhook_failed", url=url, attempt=attempt, reason=reason)
            await asyncio.sleep(RETRY_WAIT_S * attempt)
        return False

    async def drain(self, timeout_s: float = 2.0) -> None:
        """Wait (up to `timeout_s`) for queued events to be sent or given up."""
        if self._queues:
            joined = asyncio.gather(*(queue.join() for queue in self._queues))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(joined, timeout_s)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        # A worker's own cancellation is its result here; a cancellation of aclose()
        # itself still propagates out of gather, and a worker's crash is raised below.
        try:
            results = await asyncio.gather(*self._tasks, return_exceptions=True)
        finally:
            self._tasks.clear()
            if self._session is not None:
                session, self._session = self._session, None
                await session.close()
        for result in results:
            if isinstance(result, Exception):
                raise result
