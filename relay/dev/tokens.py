"""Join tokens for the dev server, and the credentials the dev tools share."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from livekit import api

DEV_API_KEY = "devkey"
DEV_API_SECRET = "devsecret-0123456789-0123456789-0123456789"


def join_token(
    api_key: str,
    api_secret: str,
    identity: str,
    room: str,
    *,
    kind: str | None = "standard",
    ttl: timedelta = timedelta(minutes=10),
    **grants: Any,
) -> str:
    """A token to join `room` as `identity`; `grants` are VideoGrants fields
    (hidden=True, can_publish=False, ...); `kind=None` leaves the kind claim out."""
    video = api.VideoGrants(room_join=True, room=room, **grants)
    token = api.AccessToken(api_key, api_secret).with_identity(identity)
    token = token.with_grants(video).with_ttl(ttl)
    if kind is not None:
        token = token.with_kind(kind)  # type: ignore[arg-type]
    return str(token.to_jwt())
