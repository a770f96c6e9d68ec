"""LiveKit Agents: the script and the summary written by hand from it."""

from __future__ import annotations

import redis.asyncio as aioredis

from relay.config import Settings
from relay.contract.event import Participant
from tests.analytics.golden import check, final, part, turn, utt
from tests.analytics.support import OBSERVER, SFU, T0_MS, Script, at, run_script

CALLER = Participant("caller", "PA_c", "standard", "user")
VOICE = Participant("voice-agent", "PA_va", "agent", "agent")


# --- LiveKit Agents: no speech events; the agent's lk.agent.state, the SFU's speakers ----
#   0 observer joins (opens nothing), caller joins (the session ag-1@T0 starts), 50 agent
#   user (speakers) 1000-1800, final "I need help" 1900
#   agent speaking (state) 2400-3400: "Sure" 2500, "Sure, what" 2700, final "Sure, what is
#     it?" 3000 and its legacy copy 3050 (another id: the decoders drop it; so do we)
#   user 3200-3900 (barges in), "My card" 3950, final "My card was declined" 4000;
#     an empty final of SG_u3 4100 (no text at all: no utterance)
#   agent speaking 4500-6200: final "Let me check." 4600
#   the relay restarts: observer.left stopped 5000, observer.joined 6000 (a gap)
#   caller leaves 6500; observer.left room_deleted 7000 ends it


def agents() -> Script:
    s = Script("ag-1")
    s.add(0, "observer.joined", OBSERVER)
    s.add(0, "participant.joined", CALLER, {"identity": "caller"}, protocol="livekit")
    s.add(50, "participant.joined", VOICE, {"identity": "voice-agent"}, protocol="livekit")
    s.add(
        100,
        "agent.state",
        VOICE,
        {"state": "listening", "previous": None},
        protocol="livekit-agents",
    )
    s.add(1000, "speakers.active", SFU, {"identities": ["caller"]}, protocol="livekit")
    s.add(1800, "speakers.active", SFU, {"identities": []}, protocol="livekit")
    s.add(
        1900,
        "transcript.final",
        VOICE,
        final("user", "I need help", "SG_u1"),
        protocol="livekit-agents",
    )
    s.add(
        2000,
        "agent.state",
        VOICE,
        {"state": "thinking", "previous": "listening"},
        protocol="livekit-agents",
    )
    s.add(
        2400,
        "agent.state",
        VOICE,
        {"state": "speaking", "previous": "thinking"},
        protocol="livekit-agents",
    )
    s.add(2400, "speakers.active", SFU, {"identities": ["voice-agent"]}, protocol="livekit")
    s.add(
        2500,
        "transcript.partial",
        VOICE,
        part("agent", "Sure", "SG_a1", "cumulative"),
        protocol="livekit-agents",
    )
    s.add(
        2700,
        "transcript.partial",
        VOICE,
        part("agent", "Sure, what", "SG_a1", "cumulative"),
        protocol="livekit-agents",
    )
    s.add(
        3000,
        "transcript.final",
        VOICE,
        final("agent", "Sure, what is it?", "SG_a1"),
        protocol="livekit-agents",
    )
    s.add(
        3050,
        "transcript.final",
        VOICE,
        final("agent", "Sure, what is it?", "SG_a1"),
        protocol="livekit-agents",
    )
    s.add(
        3200, "speakers.active", SFU, {"identities": ["voice-agent", "caller"]}, protocol="livekit"
    )
    s.add(
        3400,
        "agent.state",
        VOICE,
        {"state": "listening", "previous": "speaking"},
        protocol="livekit-agents",
    )
    s.add(3400, "speakers.active", SFU, {"identities": ["caller"]}, protocol="livekit")
    s.add(3900, "speakers.active", SFU, {"identities": []}, protocol="livekit")
    s.add(
        3950,
        "transcript.partial",
        VOICE,
        part("user", "My card", "SG_u2", "cumulative"),
        protocol="livekit-agents",
    )
    s.add(
        4000,
        "transcript.final",
        VOICE,
        final("user", "My card was declined", "SG_u2"),
        protocol="livekit-agents",
    )
    s.add(4100, "transcript.final", VOICE, final("user", "", "SG_u3"), protocol="livekit-agents")
    s.add(
        4500,
        "agent.state",
        VOICE,
        {"state": "speaking", "previous": "listening"},
        protocol="livekit-agents",
    )
    s.add(
        4600,
        "transcript.final",
        VOICE,
        final("agent", "Let me check.", "SG_a2"),
        protocol="livekit-agents",
    )
    s.add(5000, "observer.left", OBSERVER, {"reason": "stopped"})
    s.add(6000, "observer.joined", OBSERVER)
    s.add(
        6200,
        "agent.state",
        VOICE,
        {"state": "listening", "previous": "speaking"},
        protocol="livekit-agents",
    )
    s.add(6500, "participant.left", CALLER, {"identity": "caller"}, protocol="livekit")
    s.add(7000, "observer.left", OBSERVER, {"reason": "room_deleted"})
    return s


async def test_livekit_agents_golden(redis: aioredis.Redis, settings: Settings) -> None:
    summary = await run_script(redis, settings, agents())
    room, p = "ag-1", "livekit-agents"
    transcript = [
        utt(room, p, "user", "caller", "I need help", (1900, 1900), "SG_u1"),
        utt(room, p, "agent", "voice-agent", "Sure, what is it?", (2500, 3000), "SG_a1"),
        utt(room, p, "user", "caller", "My card was declined", (3950, 4000), "SG_u2"),
        utt(room, p, "agent", "voice-agent", "Let me check.", (4600, 4600), "SG_a2"),
    ]
    signal = "active_speakers->agent_state"
    check(
        summary,
        transcript,
        {
            "v": 1,
            "session_id": f"ag-1@{T0_MS}",
            "room": "ag-1",
            "start": at(0),
            "end": at(7000),
            "duration_ms": 7000,
            "end_reason": "room_finished",
            "end_detail": "room_deleted",
            "participants": [
                {"identity": "caller", "role": "user"},
                {"identity": "voice-agent", "role": "agent"},
            ],
            "empty_utterances": 1,
            "turns": [
                turn(0, (1000, 1800), "agent", (2400, 3400), signal),
                turn(1, (3200, 3900), "agent", (4500, 6200), signal),
            ],
            "latency": {"count": 2, "p50_ms": 600, "p90_ms": 600, "p99_ms": 600},
            "speech_signals": {"user": "active_speakers", "agent": "agent_state"},
            "interruptions": {
                "total": 1,
                "by_kind": {"user_over_response": 1},
                "items": [{"at_ms": 3200, "kind": "user_over_response", "identity": None}],
            },
            "overlap_ms": 200,
            "speaking_ms": {"user": 1500, "agent": 2700},
            "talk_ratio": {"user": 0.357, "agent": 0.643},
            "silence_ms": 7000 - 4000,  # covered: 1000-1800, 2400-3900, 4500-6200 (the gap inside)
            "words": {"user": 7, "agent": 7},
            "words_per_minute": {"user": 280.0, "agent": 155.6},
            "event_counts": {
                "agent.state": 6,
                "observer.joined": 1,
                "observer.left": 2,
                "participant.joined": 2,
                "participant.left": 1,
                "speakers.active": 6,
                "transcript.final": 6,
                "transcript.partial": 3,
            },
            "gaps": [
                {"start_ms": 5000, "end_ms": 6000, "duration_ms": 1000, "reason": "observer_left"}
            ],
            "gap_ms": 1000,
            "spans": {"user": [[1000, 1800], [3200, 3900]], "agent": [[2400, 3400], [4500, 6200]]},
        },
    )
