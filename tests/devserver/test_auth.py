"""Tokens the dev server must refuse, through the SDK and through /rtc/validate."""

from __future__ import annotations

from datetime import timedelta

import aiohttp
import pytest
from livekit import api

from tests.fixtures.lk_client import LkError, LkProcess
from tests.fixtures.netns import DevServer, NetNS

pytestmark = pytest.mark.e2e


def bad_tokens(server: DevServer) -> dict[str, str]:
    room = "auth"
    wrong_secret = api.AccessToken(server.api_key, "not-the-secret-not-the-secret-00")
    wrong_key = api.AccessToken("other-key", server.api_secret)
    grants = api.VideoGrants(room_join=True, room=room)
    no_join = api.VideoGrants(room_join=False, room=room, room_list=True)
    return {
        "bad_secret": wrong_secret.with_identity("x").with_grants(grants).to_jwt(),
        "unknown_key": wrong_key.with_identity("x").with_grants(grants).to_jwt(),
        "expired": server.token("x", room, ttl=timedelta(minutes=-5)),
        "no_room_join": api.AccessToken(server.api_key, server.api_secret)
        .with_identity("x")
        .with_grants(no_join)
        .to_jwt(),
        "garbage": "not-a-jwt",
    }


async def test_validate_refuses_bad_tokens_with_401(devserver: DevServer) -> None:
    async with aiohttp.ClientSession() as http:
        for case, token in bad_tokens(devserver).items():
            headers = {"Authorization": f"Bearer {token}"}
            url = f"{devserver.http_url}/rtc/validate"
            async with http.get(url, headers=headers) as response:
                assert response.status == 401, case
        good = {"Authorization": f"Bearer {devserver.token('x', 'auth')}"}
        async with http.get(f"{devserver.http_url}/rtc/validate", headers=good) as response:
            assert response.status == 200
            assert await response.text() == "success"
        async with http.get(f"{devserver.http_url}/rtc") as response:
            assert response.status == 401


async def test_sdk_connect_fails_for_bad_tokens(netns: NetNS, devserver: DevServer) -> None:
    tokens = bad_tokens(devserver)
    async with LkProcess.start(netns) as lk:
        for case in ("bad_secret", "expired", "no_room_join"):
            with pytest.raises(LkError, match=r"(?i)401|unauthorized|permission|invalid"):
                await lk.connect(case, devserver.ws_url, tokens[case])
