"""Observer tokens: hidden, subscribe-only, no publish rights of any kind."""

from __future__ import annotations

import dataclasses
import itertools
import os
import secrets
import socket
from datetime import timedelta

from livekit import api

from relay.config import LiveKitSettings

_identity_counter = itertools.count(1)
# Fixed for the life of the process: tells apart processes that share a host name and pid
# numbers (containers with host networking each run as pid 1).
_PROCESS_RAND = secrets.token_hex(2)


def next_observer_identity(template: str, *, worker: int = 0) -> str:
    """The template filled in: {host}, {worker} (the supervisor's slot), {pid}, {rand} (4
    hex digits drawn once per process), {n} (a counter of this process). The default
    `relay-{host}-{worker}-{pid}-{n}` is unique across hosts, workers and processes, so no
    observer replaces another in a room (LiveKit disconnects the earlier of two
    participants with one identity)."""
    return template.format(
        host=socket.gethostname(),
        worker=worker,
        pid=os.getpid(),
        rand=_PROCESS_RAND,
        n=next(_identity_counter),
    )


def mint_observer_token(api_key: str, api_secret: str, room: str, identity: str, ttl_s: int) -> str:
    grants = api.VideoGrants(
        room_join=True,
        room=room,
        hidden=True,
        # VideoGrants default to publish rights: an observer must not have any.
        can_publish=False,
        can_publish_data=False,
        can_subscribe=True,
        can_update_own_metadata=False,
    )
    return (
        api.AccessToken(api_key, api_secret)
        .with_identity(identity)
        .with_name("relay observer")
        .with_grants(grants)
        .with_ttl(timedelta(seconds=ttl_s))
        .to_jwt()
    )


@dataclasses.dataclass(frozen=True, slots=True)
class RoomTarget:
    """A room to observe. `url`/`token` are set for rooms whose tokens come from elsewhere."""

    room: str
    url: str | None = None
    token: str | None = None
    # Scale-out: why the first observer.joined happens (`takeover`), and since when (epoch
    # seconds) nobody observed the room: its `gap_ms` runs from then to the join itself.
    joined_reason: str | None = None
    unobserved_since: float | None = None

    def credentials(self, livekit: LiveKitSettings, identity: str) -> tuple[str, str]:
        """The url and token to join with: the given pair, else a token minted here."""
        url = self.url or livekit.url
        if self.token:
            return url, self.token
        secret = livekit.api_secret.get_secret_value()
        ttl_s = livekit.observer_token_ttl_s
        return url, mint_observer_token(livekit.api_key, secret, self.room, identity, ttl_s)
