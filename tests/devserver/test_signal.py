"""The signalling websocket at the frame level, as the SDK speaks it: the join shape the
real server has (subscriber primary, server-offered data channels), /rtc/v1 refused so the
SDK falls back, ping/pong, leave."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from livekit.protocol import rtc

from tests.fixtures.netns import DevServer

pytestmark = pytest.mark.e2e
RTC_QUERY = "sdk=python&protocol=16&auto_subscribe=0"


async def next_response(ws: aiohttp.ClientWebSocketResponse, which: str) -> rtc.SignalResponse:
    """The next SignalResponse of kind `which` (others, e.g. a participant update, pass)."""
    while True:
        message = await ws.receive(timeout=10)
        assert message.type == aiohttp.WSMsgType.BINARY, message
        response = rtc.SignalResponse.FromString(message.data)
        if response.WhichOneof("message") == which:
            return response


async def send(ws: aiohttp.ClientWebSocketResponse, request: rtc.SignalRequest) -> None:
    await ws.send_bytes(request.SerializeToString())


@pytest.fixture
async def signal_ws(devserver: DevServer) -> AsyncIterator[aiohttp.ClientWebSocketResponse]:
    token = devserver.token("frame-client", "signal-shape")
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.ws_connect(f"{devserver.ws_url}/rtc?{RTC_QUERY}", headers=headers) as ws,
    ):
        yield ws


async def test_join_is_subscriber_primary_with_server_offered_data_channels(
    signal_ws: aiohttp.ClientWebSocketResponse,
) -> None:
    join = (await next_response(signal_ws, "join")).join
    assert join.subscriber_primary  # like livekit-server: the server offers first
    assert join.room.name == "signal-shape"
    assert join.room.sid.startswith("RM_")
    assert join.participant.sid.startswith("PA_")
    assert join.participant.identity == "frame-client"
    assert join.ping_interval > 0 and join.ping_timeout > 0

    offer = (await next_response(signal_ws, "offer")).offer
    assert offer.type == "offer"
    # One SCTP m-line: the server-created _reliable and _lossy data channels.
    assert offer.sdp.count("m=application") == 1
    assert "webrtc-datachannel" in offer.sdp


async def test_ping_is_answered_and_leave_closes(
    signal_ws: aiohttp.ClientWebSocketResponse,
) -> None:
    await next_response(signal_ws, "join")
    await send(signal_ws, rtc.SignalRequest(ping_req=rtc.Ping(timestamp=12345, rtt=3)))
    pong = (await next_response(signal_ws, "pong_resp")).pong_resp
    assert pong.last_ping_timestamp == 12345
    assert pong.timestamp > 0

    leave = rtc.LeaveRequest(action=rtc.LeaveRequest.Action.DISCONNECT)
    await send(signal_ws, rtc.SignalRequest(leave=leave))
    message = await signal_ws.receive(timeout=10)
    assert message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_single_pc_path_is_refused_so_the_sdk_falls_back(devserver: DevServer) -> None:
    token = devserver.token("frame-client", "signal-shape")
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{devserver.http_url}/rtc/v1?{RTC_QUERY}", headers=headers) as response,
    ):
        assert response.status == 404
