"""Observer tokens carry no publish rights and hide the observer."""

from __future__ import annotations

import re

from livekit import api

from relay.observer.token import mint_observer_token, next_observer_identity

KEY, SECRET = "devkey", "devsecret-devsecret-devsecret-000"


def test_minted_token_is_hidden_and_receive_only() -> None:
    token = mint_observer_token(KEY, SECRET, "room-1", "relay-test-1", ttl_s=60)
    claims = api.TokenVerifier(KEY, SECRET).verify(token)
    grants = claims.video
    assert grants is not None
    assert claims.identity == "relay-test-1"
    assert (grants.room, grants.room_join, grants.hidden) == ("room-1", True, True)
    assert grants.can_publish is False
    assert grants.can_publish_data is False
    assert grants.can_subscribe is True


def test_identity_template_fills_host_and_counter() -> None:
    first = next_observer_identity("relay-{host}-{n}")
    second = next_observer_identity("relay-{host}-{n}")
    assert re.fullmatch(r"relay-.+-\d+", first)
    assert first != second
