"""HttpServer: the bound port from the runner's public addresses; a bind that fails is a
StartError naming the setting, and the server closes cleanly after it."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from relay.errors import StartError
from relay.http import HttpServer


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def app() -> web.Application:
    application = web.Application()
    application.router.add_get("/healthz", healthz)
    return application


async def get_healthz(port: int) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    response = await reader.read()
    writer.close()
    await writer.wait_closed()
    return response


async def test_port_0_binds_a_free_port_and_reports_it() -> None:
    server = HttpServer(app(), "127.0.0.1", 0)
    await server.start()
    try:
        assert server.bound_port is not None and server.bound_port > 0
        assert (await get_healthz(server.bound_port)).startswith(b"HTTP/1.1 200")
    finally:
        await server.stop()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", server.bound_port)


async def test_a_taken_port_is_a_start_error_naming_the_setting() -> None:
    first = HttpServer(app(), "127.0.0.1", 0)
    await first.start()
    try:
        assert first.bound_port is not None
        second = HttpServer(app(), "127.0.0.1", first.bound_port)
        with pytest.raises(StartError) as raised:
            await second.start()
        await second.stop()  # after a failed start: closes what setup opened
        assert str(raised.value) == (
            f"cannot listen on 127.0.0.1:{first.bound_port}: address already in use; "
            "set RELAY_HTTP__PORT (toml: http.port) to a free port"
        )
        assert (await get_healthz(first.bound_port)).startswith(b"HTTP/1.1 200")
    finally:
        await first.stop()


async def test_a_host_that_is_not_here_is_a_start_error_naming_the_host() -> None:
    server = HttpServer(app(), "192.0.2.1", 0)  # TEST-NET-1: no interface has it
    with pytest.raises(StartError, match=r"^cannot listen on 192\.0\.2\.1:0: .*RELAY_HTTP__HOST"):
        await server.start()
    await server.stop()


async def test_stop_without_start_does_nothing() -> None:
    await HttpServer(app(), "127.0.0.1", 0).stop()
