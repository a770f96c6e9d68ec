"""Helpers of the golden tests: payloads, and the expected documents built from a
script's numbers (offsets in ms from T0), never from the code under test."""

from __future__ import annotations

from typing import Any

from relay.analytics.model import validate_document
from tests.analytics.support import T0_MS, at, without_ids


def part(role: str, text: str, segment: str, mode: str) -> dict[str, str]:
    return {"role": role, "text": text, "segment_id": segment, "mode": mode}


def final(role: str, text: str, segment: str) -> dict[str, str]:
    return {"role": role, "text": text, "segment_id": segment}


def utt(
    room: str,
    protocol: str,
    role: str,
    who: str,
    text: str,
    span: tuple[int, int],
    seg: str,
    *,
    no_final: bool = False,
) -> dict[str, Any]:
    return {
        "v": 1,
        "room": room,
        "session_id": f"{room}@{T0_MS}",
        "role": role,
        "identity": who,
        "protocol": protocol,
        "text": text,
        "words": len(text.split()),
        "start": at(span[0]),
        "end": at(span[1]),
        "duration_ms": span[1] - span[0],
        "segment_ids": [seg],
        "closed_without_final": no_final,
    }


def turn(
    i: int, user: tuple[int, int], role: str, reply: tuple[int, int], signal: str
) -> dict[str, Any]:
    return {
        "index": i,
        "user_start_ms": user[0],
        "user_end_ms": user[1],
        "response_role": role,
        "response_start_ms": reply[0],
        "response_end_ms": reply[1],
        "latency_ms": reply[0] - user[1],
        "signal": signal,
    }


def check(summary: dict[str, Any], transcript: list[dict[str, Any]], rest: dict[str, Any]) -> None:
    validate_document(summary, "session")
    assert without_ids(summary.pop("transcript")) == transcript
    assert summary == rest
