"""LiveAvatar FULL: a scripted session and the transcript and summary written by hand
from the script (offsets in ms from T0; the session starts at session.started, 200).

    100 visitor joins; 200 agent joins, session.started s1; 300 heygen joins
    user   speaks 1000-2000: "Can you" 1200, "Can you check my order" 1600, final 2100
    avatar speaks 2800-3800: deltas "Sure," 2900, " it ships" 3300, empty final 3900
    user   barges in 3500-4500 (inside the avatar's 2800-3800), avatar.interrupt 3700;
           "Wait" 4000, no final: closed by the user's next speech start (6000)
    avatar speaks 5000-5600: "OK." 5100, final 5600
    user   speaks 6000-6800: "Thanks" 6200, final "Thanks bye" 6900 (then again, same id)
    observer reconnecting 7000 -> resumed 8000
    avatar speaks 8500-9000: final "Bye." 8600
    session.stopped USER_CLOSED 9500; the agent leaves 9600 (after the end: ignored)
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import Any, cast

import redis.asyncio as aioredis

from relay import keys
from relay.analytics.model import validate_document
from relay.config import Settings
from relay.contract.event import Participant
from tests.analytics.support import OBSERVER, Script, at, run_script, utterances, without_ids

VISITOR = Participant("visitor", "PA_v", "standard", "user")
AGENT = Participant("liveavatar-agent-s1", "PA_a", "agent", "agent")
HEYGEN = Participant("heygen", "PA_h", "standard", "avatar")
ROOM = "la-1"


def liveavatar_script() -> Script:
    s = Script(ROOM, "s1")
    s.add(0, "observer.joined", OBSERVER, session=False)
    s.add(
        100,
        "participant.joined",
        VISITOR,
        {"identity": "visitor"},
        protocol="livekit",
        session=False,
    )
    s.add(200, "participant.joined", AGENT, {"identity": AGENT.identity}, protocol="livekit")
    s.add(200, "session.started", AGENT)
    s.add(300, "participant.joined", HEYGEN, {"identity": "heygen"}, protocol="livekit")
    u1 = "liveavatar:user@1200"
    s.add(1000, "speech.started", AGENT, {"role": "user"})
    s.add(1200, "transcript.partial", AGENT, part("user", "Can you", u1, "cumulative"))
    s.add(
        1600, "transcript.partial", AGENT, part("user", "Can you check my order", u1, "cumulative")
    )
    s.add(2000, "speech.ended", AGENT, {"role": "user"})
    s.add(2100, "transcript.final", AGENT, final("user", "Can you check my order?", u1))
    s.add(2800, "speech.started", AGENT, {"role": "avatar"})
    s.add(2900, "transcript.partial", AGENT, part("avatar", "Sure,", "cmd-1", "delta"))
    s.add(3300, "transcript.partial", AGENT, part("avatar", " it ships", "cmd-1", "delta"))
    s.add(3500, "speech.started", AGENT, {"role": "user"})
    s.add(3700, "command", VISITOR, {"command": "avatar.interrupt"})
    s.add(3800, "speech.ended", AGENT, {"role": "avatar"})
    s.add(3900, "transcript.final", AGENT, final("avatar", "", "cmd-1"))  # transcription_ended
    s.add(
        4000,
        "transcript.partial",
        AGENT,
        part("user", "Wait", "liveavatar:user@4000", "cumulative"),
    )
    s.add(4500, "speech.ended", AGENT, {"role": "user"})
    s.add(5000, "speech.started", AGENT, {"role": "avatar"})
    s.add(5100, "transcript.partial", AGENT, part("avatar", "OK.", "cmd-2", "delta"))
    s.add(5600, "transcript.final", AGENT, final("avatar", "OK.", "cmd-2"))
    s.add(5600, "speech.ended", AGENT, {"role": "avatar"})
    u3 = "liveavatar:user@6200"
    s.add(6000, "speech.started", AGENT, {"role": "user"})
    s.add(6200, "transcript.partial", AGENT, part("user", "Thanks", u3, "cumulative"))
    s.add(6800, "speech.ended", AGENT, {"role": "user"})
    thanks = s.add(6900, "transcript.final", AGENT, final("user", "Thanks bye", u3))
    s.add(7000, "observer.reconnecting", OBSERVER, {"reason": "signal_lost"})
    s.add(8000, "observer.resumed", OBSERVER, {"gap_ms": 1000})
    s.repeat(thanks)  # replayed after the resume: same id
    s.add(8500, "speech.started", AGENT, {"role": "avatar"})
    s.add(8600, "transcript.final", AGENT, final("avatar", "Bye.", "cmd-3"))
    s.add(9000, "speech.ended", AGENT, {"role": "avatar"})
    s.add(9500, "session.stopped", AGENT, {"reason": "USER_CLOSED"})
    s.add(9600, "participant.left", AGENT, {"identity": AGENT.identity}, protocol="livekit")
    return s


def part(role: str, text: str, segment: str, mode: str) -> dict[str, str]:
    return {"role": role, "text": text, "segment_id": segment, "mode": mode}


def final(role: str, text: str, segment: str) -> dict[str, str]:
    return {"role": role, "text": text, "segment_id": segment}


def utterance(
    role: str, who: str, text: str, start: int, end: int, segment: str, *, no_final: bool = False
) -> dict[str, object]:
    return {
        "v": 1,
        "room": ROOM,
        "session_id": "s1",
        "role": role,
        "identity": who,
        "protocol": "liveavatar",
        "text": text,
        "words": len(text.split()),
        "start": at(start),
        "end": at(end),
        "duration_ms": end - start,
        "segment_ids": [segment],
        "closed_without_final": no_final,
    }


EXPECTED_TRANSCRIPT = [
    utterance("user", "visitor", "Can you check my order?", 1200, 2100, "liveavatar:user@1200"),
    utterance("avatar", "heygen", "Sure, it ships", 2900, 3900, "cmd-1"),
    utterance("user", "visitor", "Wait", 4000, 4000, "liveavatar:user@4000", no_final=True),
    utterance("avatar", "heygen", "OK.", 5100, 5600, "cmd-2"),
    utterance("user", "visitor", "Thanks bye", 6200, 6900, "liveavatar:user@6200"),
    utterance("avatar", "heygen", "Bye.", 8600, 8600, "cmd-3"),
]


def turn(i: int, us: int, ue: int, rs: int, re_: int) -> dict[str, object]:
    # offsets from the session start (200)
    return {
        "index": i,
        "user_start_ms": us - 200,
        "user_end_ms": ue - 200,
        "response_role": "avatar",
        "response_start_ms": rs - 200,
        "response_end_ms": re_ - 200,
        "latency_ms": rs - ue,
        "signal": "speech_events->speech_events",
    }


EXPECTED_SUMMARY = {
    "v": 1,
    "session_id": "s1",
    "room": ROOM,
    "start": at(200),
    "end": at(9500),
    "duration_ms": 9300,
    "end_reason": "session_stopped",
    "end_detail": "USER_CLOSED",
    "participants": [
        {"identity": "heygen", "role": "avatar"},
        {"identity": "liveavatar-agent-s1", "role": "agent"},
        {"identity": "visitor", "role": "user"},
    ],
    "empty_utterances": 0,
    "turns": [
        turn(0, 1000, 2000, 2800, 3800),
        turn(1, 3500, 4500, 5000, 5600),
        turn(2, 6000, 6800, 8500, 9000),
    ],
    # latencies 800, 500, 1700: nearest rank of [500, 800, 1700]
    "latency": {"count": 3, "p50_ms": 800, "p90_ms": 1700, "p99_ms": 1700},
    "speech_signals": {"user": "speech_events", "avatar": "speech_events"},
    "interruptions": {
        "total": 2,
        "by_kind": {"user_over_response": 1, "command": 1},
        "items": [
            {"at_ms": 3300, "kind": "user_over_response", "identity": None},
            {"at_ms": 3500, "kind": "command", "identity": "visitor"},
        ],
    },
    "overlap_ms": 300,  # user 3500-4500 against avatar 2800-3800
    "speaking_ms": {"user": 2800, "avatar": 2100},
    "talk_ratio": {"user": 0.571, "avatar": 0.429},
    # covered: 800-1800, 2600-4300, 4800-5400, 5800-6600, the gap 6800-7800, 8300-8800
    "silence_ms": 9300 - 5600,
    "words": {"user": 8, "avatar": 5},
    "words_per_minute": {"user": 171.4, "avatar": 142.9},
    "event_counts": {
        "command": 1,
        "observer.reconnecting": 1,
        "observer.resumed": 1,
        "participant.joined": 3,
        "session.started": 1,
        "session.stopped": 1,
        "speech.ended": 6,
        "speech.started": 6,
        "transcript.final": 5,
        "transcript.partial": 7,
    },
    "gaps": [{"start_ms": 6800, "end_ms": 7800, "duration_ms": 1000, "reason": "reconnecting"}],
    "gap_ms": 1000,
    "spans": {
        "user": [[800, 1800], [3300, 4300], [5800, 6600]],
        "avatar": [[2600, 3600], [4800, 5400], [8300, 8800]],
    },
}


def check_summary(summary: dict[str, object]) -> None:
    validate_document(summary, "session")
    transcript = summary.pop("transcript")
    assert isinstance(transcript, list)
    assert without_ids(transcript) == EXPECTED_TRANSCRIPT
    assert summary == EXPECTED_SUMMARY


async def test_liveavatar_session_golden(redis: aioredis.Redis, settings: Settings) -> None:
    summary = await run_script(redis, settings, liveavatar_script())
    written = await utterances(redis, keys.transcripts_key(settings.redis))
    in_room = await utterances(redis, keys.room_transcripts_key(settings.redis, ROOM))
    assert written == in_room
    # written as each closes: "Wait" only when the user speaks again (6000), after "OK."
    assert without_ids(written) == [EXPECTED_TRANSCRIPT[i] for i in (0, 1, 3, 2, 4, 5)]
    ids = [u["utterance_id"] for u in written]
    assert len(set(ids)) == 6 and all(re.fullmatch(r"ut_[0-9a-f]{20}", i) for i in ids)
    for doc in written:
        validate_document(doc, "utterance")
    assert sorted(u["utterance_id"] for u in summary["transcript"]) == sorted(ids)
    check_summary(summary)
    stored = await cast(Awaitable[Any], redis.hgetall(keys.session_key(settings.redis, "s1")))
    assert stored[b"end_reason"] == b"session_stopped"
    assert 0 < await redis.ttl(keys.session_key(settings.redis, "s1")) <= 7 * 24 * 3600
