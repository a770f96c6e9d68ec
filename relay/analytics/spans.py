"""A session summary as a tree of spans: the trace `relay analytics` exports over OTLP
(relay.analytics.otel). Pure, no OpenTelemetry import: the SDK is an optional extra, and
the span model can be read and tested without it.

Times come from the summary (its `start` plus the offsets of its turns, interruptions and
gaps), never from the clock at export time. Ids are derived from the session id, so a
summary exported again (a retry, a replay) gives the same trace and the same span ids.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from collections.abc import Callable

from relay.analytics.assemble import Doc, ts_ms

AttributeValue = str | bool | int | float | tuple[str, ...]
Attributes = dict[str, AttributeValue]
NS_PER_MS = 1_000_000
_Clock = Callable[[int], int]  # a summary offset (ms from its start) to epoch ns


@dataclasses.dataclass(frozen=True, slots=True)
class SpanEvent:
    name: str
    at_ns: int
    attributes: Attributes


@dataclasses.dataclass(frozen=True, slots=True)
class PlannedSpan:
    name: str
    start_ns: int
    end_ns: int
    attributes: Attributes
    events: tuple[SpanEvent, ...] = ()
    children: tuple[PlannedSpan, ...] = ()

    def walk(self) -> list[PlannedSpan]:
        """This span and its descendants, depth first (the order their ids are given in)."""
        return [self, *(span for child in self.children for span in child.walk())]


def trace_id_of(session_id: str) -> int:
    """128 bits of a hash of the session id (never 0, which OpenTelemetry calls invalid)."""
    digest = hashlib.sha256(f"relay-trace|{session_id}".encode()).digest()
    return int.from_bytes(digest[:16], "big") or 1


def span_id_of(session_id: str, index: int) -> int:
    """64 bits for the `index`-th span of the session's trace (depth first, root 0)."""
    digest = hashlib.sha256(f"relay-span|{session_id}|{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") or 1


def session_trace(summary: Doc) -> PlannedSpan:
    """The root span of the session, with a `turn` per turn and a `coverage_gap` per gap."""
    start_ms = ts_ms(summary["start"])

    def ns(offset_ms: int) -> int:
        return (start_ms + offset_ms) * NS_PER_MS

    turns = summary["turns"]
    homes = _interruption_homes(turns, summary["interruptions"]["items"])
    children = [_turn_span(turn, homes.get(turn["index"], []), ns) for turn in turns]
    children.extend(
        PlannedSpan(
            "coverage_gap",
            ns(gap["start_ms"]),
            ns(gap["end_ms"]),
            {"relay.gap.reason": gap["reason"], "relay.gap.duration_ms": gap["duration_ms"]},
        )
        for gap in summary["gaps"]
    )
    return PlannedSpan(
        "session",
        ns(0),
        ns(summary["duration_ms"]),
        _session_attributes(summary),
        tuple(_event(item, ns) for item in homes.get(None, [])),
        tuple(children),
    )


def _session_attributes(summary: Doc) -> Attributes:
    protocols = Counter(u["protocol"] for u in summary["transcript"] if u.get("protocol"))
    attributes: Attributes = {
        "relay.session_id": summary["session_id"],
        "relay.room": summary["room"],
        "relay.end_reason": summary["end_reason"],
        "relay.duration_ms": summary["duration_ms"],
        "relay.turns": len(summary["turns"]),
        "relay.utterances": len(summary["transcript"]),
        "relay.interruptions": summary["interruptions"]["total"],
        "relay.latency.count": summary["latency"]["count"],
        "relay.overlap_ms": summary["overlap_ms"],
        "relay.silence_ms": summary["silence_ms"],
        "relay.gap_ms": summary["gap_ms"],
        "relay.participants": tuple(
            f"{p['identity']} ({p['role']})" for p in summary["participants"]
        ),
    }
    if protocols:
        # The summary has no protocol of its own: the one its utterances came through most.
        attributes["relay.protocol"] = protocols.most_common(1)[0][0]
    if summary["end_detail"] is not None:
        attributes["relay.end_detail"] = summary["end_detail"]
    for name in ("p50_ms", "p90_ms", "p99_ms"):
        if summary["latency"][name] is not None:
            attributes[f"relay.latency.{name}"] = summary["latency"][name]
    for field in ("speaking_ms", "talk_ratio", "words", "speech_signals"):
        for role, value in summary[field].items():
            attributes[f"relay.{field}.{role}"] = value
    return attributes


def _turn_span(turn: Doc, interruptions: list[Doc], ns: _Clock) -> PlannedSpan:
    user_start, user_end = turn["user_start_ms"], turn["user_end_ms"]
    attributes: Attributes = {
        "relay.turn.index": turn["index"],
        "relay.turn.answered": turn["response_role"] is not None,
        "relay.turn.interruptions": len(interruptions),
    }
    if turn["signal"] is not None:
        attributes["relay.turn.signal"] = turn["signal"]
    children = [PlannedSpan("user_speech", ns(user_start), ns(user_end), {"relay.role": "user"})]
    end = user_end
    role = turn["response_role"]
    if role is not None:
        latency, reply_start, reply_end = (
            turn["latency_ms"],
            turn["response_start_ms"],
            turn["response_end_ms"],
        )
        attributes["relay.turn.response_role"] = role
        attributes["relay.turn.latency_ms"] = latency
        if latency > 0:  # a reply that began before the user stopped has no wait
            wait = {"relay.turn.latency_ms": latency}
            children.append(PlannedSpan("wait", ns(user_end), ns(reply_start), wait))
        children.append(
            PlannedSpan(f"{role}_speech", ns(reply_start), ns(reply_end), {"relay.role": role})
        )
        end = max(end, reply_end)
    return PlannedSpan(
        "turn",
        ns(user_start),
        ns(end),
        attributes,
        tuple(_event(item, ns) for item in interruptions),
        tuple(children),
    )


def _interruption_homes(turns: list[Doc], items: list[Doc]) -> dict[int | None, list[Doc]]:
    """Each interruption goes to the first turn whose time holds it (the one interrupted:
    a barge-in also starts the next turn); outside every turn, to the session."""
    homes: dict[int | None, list[Doc]] = {}
    for item in items:
        home = next((t["index"] for t in turns if _turn_holds(t, item["at_ms"])), None)
        homes.setdefault(home, []).append(item)
    return homes


def _turn_holds(turn: Doc, at_ms: int) -> bool:
    end = max(turn["user_end_ms"], turn["response_end_ms"] or turn["user_end_ms"])
    return bool(turn["user_start_ms"] <= at_ms <= end)


def _event(item: Doc, ns: _Clock) -> SpanEvent:
    attributes: Attributes = {"relay.interruption.kind": item["kind"]}
    if item["identity"] is not None:
        attributes["relay.interruption.identity"] = item["identity"]
    return SpanEvent("interruption", ns(item["at_ms"]), attributes)
