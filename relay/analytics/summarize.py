"""The session summary, made once when the session ends, from the assembled state.

Speech edges are paired per role and signal after sorting by time; each role's spans
come from the best signal it has (model.SPEECH_SIGNALS order), and the summary says
which one stood in. Percentiles are nearest-rank.
"""

from __future__ import annotations

import math
from typing import Any

from relay.analytics.assemble import Doc, State, iso, session_key
from relay.analytics.model import (
    DOC_VERSION,
    RESPONSE_ROLES,
    SPEAKER_ROLES,
    SPEECH_SIGNALS,
    EndReason,
)

Span = tuple[int, int]
INFINITY = math.inf


def summarize(state: State, end_ms: int, reason: EndReason, detail: str | None) -> Doc:
    """The summary document (schema `session-v1.schema.json`); open turns must be closed."""
    start = state["started_ms"] if state["started_ms"] is not None else state["start_ms"]
    end = max(end_ms, start)
    spans, signals = speech_spans(state["edges"], start, end)
    turns = build_turns(spans, signals, start)
    latencies = [t["latency_ms"] for t in turns if t["latency_ms"] is not None]
    speaking = {role: total(s) for role, s in spans.items()}
    gaps = _gaps(state, start, end)
    interruptions = _interruptions(state, spans, start)
    words = _words(state["utterances"])
    duration = end - start
    seen = [(s - start, e - start) for role_spans in spans.values() for s, e in role_spans]
    covered = union(seen + gaps_spans(gaps))
    return {
        "v": DOC_VERSION,
        "session_id": session_key(state),
        "room": state["room"],
        "start": iso(start),
        "end": iso(end),
        "duration_ms": duration,
        "end_reason": reason,
        "end_detail": detail,
        "participants": [
            {"identity": who, "role": role} for who, role in sorted(state["participants"].items())
        ],
        "transcript": sorted(state["utterances"], key=lambda u: (u["start"], u["end"])),
        "empty_utterances": state["empty_utterances"],
        "turns": turns,
        "latency": {"count": len(latencies), **percentiles(latencies)},
        "speech_signals": signals,
        "interruptions": interruptions,
        "overlap_ms": total(intersect(spans.get("user", []), _response_spans(spans))),
        "speaking_ms": speaking,
        "talk_ratio": _ratios(speaking),
        "silence_ms": max(0, duration - total(covered)),
        "words": words,
        "words_per_minute": {
            role: round(words[role] / (speaking[role] / 60000), 1)
            for role in words
            if speaking.get(role)
        },
        "event_counts": dict(sorted(state["counts"].items())),
        "gaps": gaps,
        "gap_ms": sum(g["duration_ms"] for g in gaps),
        "spans": {role: [[s - start, e - start] for s, e in sp] for role, sp in spans.items()},
    }


def speech_spans(
    edges: list[list[Any]], start: int, end: int
) -> tuple[dict[str, list[Span]], dict[str, str]]:
    """Per role: its merged spans (clipped to the session) from its best signal."""
    spans: dict[str, list[Span]] = {}
    signals: dict[str, str] = {}
    for role in SPEAKER_ROLES:
        for signal in SPEECH_SIGNALS:
            mine = sorted((e for e in edges if e[1] == role and e[2] == signal), key=lambda e: e[0])
            paired = _pair(mine, end)
            clipped = [
                (max(s, start), min(e, end)) for s, e in paired if min(e, end) > max(s, start)
            ]
            if clipped:
                spans[role], signals[role] = union(clipped), signal
                break
    return spans, signals


def _pair(edges: list[list[Any]], end: int) -> list[Span]:
    out: list[Span] = []
    opened: int | None = None
    for at, _role, _signal, starting in edges:
        if starting and opened is None:
            opened = at
        elif not starting and opened is not None:
            out.append((opened, at))
            opened = None
    if opened is not None:
        out.append((opened, end))
    return out


def build_turns(spans: dict[str, list[Span]], signals: dict[str, str], start: int) -> list[Doc]:
    """A user turn (user spans with no response between them) and the response after it."""
    users = spans.get("user", [])
    responses = sorted((s, e, role) for role in RESPONSE_ROLES for s, e in spans.get(role, []))
    turns: list[Doc] = []
    i = 0
    while i < len(users):
        user_start, user_end = users[i]
        reply = next((r for r in responses if r[0] > user_start), None)
        while i + 1 < len(users) and (reply is None or users[i + 1][0] < reply[0]):
            i += 1
            user_end = max(user_end, users[i][1])
        turns.append(_turn(len(turns), user_start, user_end, reply, signals, start))
        i += 1
    return turns


def _turn(
    index: int,
    user_start: int,
    user_end: int,
    reply: tuple[int, int, str] | None,
    signals: dict[str, str],
    start: int,
) -> Doc:
    turn: Doc = {
        "index": index,
        "user_start_ms": user_start - start,
        "user_end_ms": user_end - start,
        "response_role": None,
        "response_start_ms": None,
        "response_end_ms": None,
        "latency_ms": None,
        "signal": signals.get("user"),
    }
    if reply is not None:
        turn["response_role"] = reply[2]
        turn["response_start_ms"] = reply[0] - start
        turn["response_end_ms"] = reply[1] - start
        turn["latency_ms"] = reply[0] - user_end
        turn["signal"] = f"{signals.get('user')}->{signals.get(reply[2])}"
    return turn


def percentiles(values: list[int]) -> dict[str, int | None]:
    ordered = sorted(values)

    def rank(q: float) -> int | None:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else None

    return {"p50_ms": rank(0.5), "p90_ms": rank(0.9), "p99_ms": rank(0.99)}


def union(spans: list[Span]) -> list[Span]:
    merged: list[Span] = []
    for s, e in sorted(spans):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


def intersect(a: list[Span], b: list[Span]) -> list[Span]:
    return [(max(s1, s2), min(e1, e2)) for s1, e1 in a for s2, e2 in b if min(e1, e2) > max(s1, s2)]


def total(spans: list[Span]) -> int:
    return sum(e - s for s, e in union(spans))


def _response_spans(spans: dict[str, list[Span]]) -> list[Span]:
    return union([s for role in RESPONSE_ROLES for s in spans.get(role, [])])


def _interruptions(state: State, spans: dict[str, list[Span]], start: int) -> Doc:
    items: list[Doc] = []
    users, responses = spans.get("user", []), _response_spans(spans)
    for s, _e in users:
        if any(rs < s < re for rs, re in responses):
            items.append({"at_ms": s - start, "kind": "user_over_response", "identity": None})
    for s, _e in responses:
        if any(us < s < ue for us, ue in users):
            items.append({"at_ms": s - start, "kind": "response_over_user", "identity": None})
    for at, kind, who in state["interruptions"]:
        items.append({"at_ms": at - start, "kind": kind, "identity": who})
    items.sort(key=lambda item: item["at_ms"])
    by_kind: dict[str, int] = {}
    for item in items:
        by_kind[item["kind"]] = by_kind.get(item["kind"], 0) + 1
    return {"total": len(items), "by_kind": by_kind, "items": items}


def _gaps(state: State, start: int, end: int) -> list[Doc]:
    raw = list(state["gaps"])
    if state["gap_open"] is not None:
        raw.append([state["gap_open"][0], end, state["gap_open"][1]])
    return [
        {"start_ms": s - start, "end_ms": e - start, "duration_ms": e - s, "reason": reason}
        for s, e, reason in raw
    ]


def gaps_spans(gaps: list[Doc]) -> list[Span]:
    return [(g["start_ms"], g["end_ms"]) for g in gaps]


def _words(utterances: list[Doc]) -> dict[str, int]:
    words: dict[str, int] = {}
    for u in utterances:
        words[u["role"]] = words.get(u["role"], 0) + u["words"]
    return words


def _ratios(speaking: dict[str, int]) -> dict[str, float]:
    talked = sum(speaking.values())
    return {role: round(ms / talked, 3) for role, ms in speaking.items()} if talked else {}
