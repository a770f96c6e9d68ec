"""The analytics metrics (collectors in relay.metrics), observed once per summary written.
Label values come from relay.analytics.model's Literals, never a room or an identity."""

from __future__ import annotations

from relay.analytics.assemble import Doc
from relay.analytics.model import END_REASONS, INTERRUPTION_KINDS, RESPONSE_ROLES, SPEAKER_ROLES
from relay.metrics import INTERRUPTIONS, SESSIONS, SPEAKING_SECONDS, TURN_RESPONSE

PAIRS = tuple(f"user->{role}" for role in RESPONSE_ROLES)
_TURNS = {pair: TURN_RESPONSE.labels(pair=pair) for pair in PAIRS}
_INTERRUPTIONS = {kind: INTERRUPTIONS.labels(kind=kind) for kind in INTERRUPTION_KINDS}
_SPEAKING = {role: SPEAKING_SECONDS.labels(role=role) for role in SPEAKER_ROLES}
_SESSIONS = {reason: SESSIONS.labels(end_reason=reason) for reason in END_REASONS}


def observe_summary(summary: Doc) -> None:
    for turn in summary["turns"]:
        pair = f"user->{turn['response_role']}"
        if turn["latency_ms"] is not None and pair in _TURNS:
            _TURNS[pair].observe(max(0.0, turn["latency_ms"] / 1000))
    for item in summary["interruptions"]["items"]:
        if item["kind"] in _INTERRUPTIONS:
            _INTERRUPTIONS[item["kind"]].inc()
    for role, ms in summary["speaking_ms"].items():
        if role in _SPEAKING:
            _SPEAKING[role].inc(ms / 1000)
    if summary["end_reason"] in _SESSIONS:
        _SESSIONS[summary["end_reason"]].inc()
