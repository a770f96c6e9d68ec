"""The SDK's native log forwarding turned off (relay/observer/sdk_internals.py): in a
fresh interpreter, with the real native library, a failed connect makes the native side
call Python with hundreds of log batches under the SDK's own init, none with relay's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import structlog
from livekit.rtc._ffi_client import FfiClient

from relay.observer import sdk_internals

PROBE = """
import asyncio, ctypes, json, os, sys
from livekit import rtc
from livekit.rtc import _ffi_client
from relay.observer import sdk_internals

applied = sdk_internals.keep_native_logs_native() if sys.argv[1] == "fix" else False
LOGS_TAG = bytes([(18 << 3) | 2, 0x01])  # FfiEvent.logs (field 18), length-delimited
original = _ffi_client.ffi_event_callback
counts = {"logs": 0, "other": 0}

@ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_uint8), ctypes.c_size_t)
def counting(data, size):
    counts["logs" if ctypes.string_at(data, 2) == LOGS_TAG else "other"] += 1
    original(data, size)

_ffi_client.ffi_event_callback = counting  # wrapped last: it sits outside relay's change

async def main():
    try:
        await rtc.Room().connect("ws://127.0.0.1:1", "a.b.c", rtc.RoomOptions(connect_timeout=2))
    except rtc.ConnectError:
        pass

asyncio.run(main())
print(json.dumps({"applied": applied, **counts}), flush=True)
os._exit(0)  # the native runtime's teardown at exit is not under test (it may abort)
"""


def probe(mode: str) -> dict[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mode],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},  # no RUST_LOG or LIVEKIT_* from the caller
        check=True,
    )
    result: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_native_log_records_stay_native_with_the_fix() -> None:
    sdk, relay = probe("sdk"), probe("fix")
    assert sdk["logs"] > 10  # the SDK's init: every native record comes to Python
    assert relay["applied"] and relay["logs"] == 0
    assert relay["other"] >= 1  # the connect's own answer still arrives


def test_the_native_logs_check_names_what_does_not_match() -> None:
    assert "not a tested version" in str(sdk_internals.native_logs_problem("9.9.9"))
    tested = next(iter(sdk_internals.TESTED_VERSIONS))
    assert FfiClient.instance is not None  # this process's SDK is initialized by now
    assert "already initialized" in str(sdk_internals.native_logs_problem(tested))


def test_an_initialized_sdk_keeps_its_forwarding(monkeypatch: pytest.MonkeyPatch) -> None:
    sdk_internals.keep_native_logs_native.cache_clear()
    try:
        assert FfiClient.instance is not None  # initialized
        with structlog.testing.capture_logs() as logs:
            assert not sdk_internals.keep_native_logs_native()
        assert [entry["feature"] for entry in logs] == ["native_logs"]
    finally:
        sdk_internals.keep_native_logs_native.cache_clear()
