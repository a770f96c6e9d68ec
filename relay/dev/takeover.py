"""The `takeover_kill9` fault's shared pieces: the relays' discovery settings and the count.

Used by bench/faults.py (at load, in a network namespace of its own) and by
tests/e2e/test_takeover_journal.py (small, in `make test`), so that both print the same
line with the same meaning:

    fault=takeover_kill9 accepted=N in_stream=N lost=N duplicates=N held=N ...

- accepted: every event id the relays accepted. A relay killed with SIGKILL accepted
  what it wrote (in the all-events stream) plus what its journal held unacknowledged at
  the kill (`held`: the kernel had each record before `submit()` returned); a relay
  stopped with SIGTERM wrote all it accepted (its `relay_stopped` says `unwritten`). So
  accepted = the ids in the stream, union the ids the victim's journal held.
- in_stream: of those, the ids with an entry in the all-events stream at the end.
- lost: accepted - in_stream (only the held ones can be missing: what the journal
  replay did not write).
- duplicates: entries beyond the first for one id.
- published / unobserved: what the publishers sent (by their own event_id) and how much
  of it no entry carries (`source.event_id`): said while no relay was in a room, the
  takeover's gap, unless a standby saw it. repeats: published ids in more than one entry.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.contract.event import Event
from relay.journal import unacknowledged

TTL_S = 2.0  # short leases: a death is seen within seconds
# The victim writes a batch a second: at the kill its buffer holds up to a second.
SLOW_FLUSH = {"RELAY_PIPELINE__FLUSH_INTERVAL_S": "1.0", "RELAY_PIPELINE__BATCH_MAX_EVENTS": "5000"}


def discovery_env(tag: str, **extra: str) -> dict[str, str]:
    """A relay's environment for scale-out on short leases, taking the rooms `<tag>-*`."""
    return {
        "RELAY_DISCOVERY__ENABLED": "true",
        "RELAY_DISCOVERY__LEASE_TTL_S": str(TTL_S),
        "RELAY_DISCOVERY__LEASE_MARGIN_S": "0.5",
        "RELAY_DISCOVERY__PICKUP_JITTER_S": "0.2",
        "RELAY_DISCOVERY__INCLUDE": json.dumps([f"{tag}-*"]),
        "RELAY_REDIS__SOCKET_TIMEOUT_S": "1",
        **extra,
    }


def held_at_kill(journal_path: Path, worker_index: int = 0) -> list[Event]:
    """The events a killed relay's journal holds unacknowledged (what its restart writes)."""
    entries = unacknowledged(journal_path / f"worker-{worker_index}")
    return [entry for entry in entries if isinstance(entry, Event)]


@dataclass(frozen=True)
class Tally:
    accepted: int
    in_stream: int
    lost: int
    duplicates: int
    held: int
    published: int
    unobserved: int
    repeats: int

    @classmethod
    def count(
        cls,
        entries: Iterable[dict[str, Any]],
        held: Sequence[Event],
        published: Iterable[str] = (),
    ) -> Tally:
        """From the all-events stream's events (decoded JSON), the victim's `held` events
        and the publishers' event ids."""
        ids = Counter[str]()
        sources = Counter[str]()
        for event in entries:
            ids[event["id"]] += 1
            source_id = (event.get("source") or {}).get("event_id")
            if source_id:
                sources[str(source_id)] += 1
        accepted = set(ids) | {event.id for event in held}
        sent = set(published)
        return cls(
            accepted=len(accepted),
            in_stream=len(ids),
            lost=len(accepted - set(ids)),
            duplicates=sum(ids.values()) - len(ids),
            held=len(held),
            published=len(sent),
            unobserved=sum(1 for event_id in sent if event_id not in sources),
            repeats=sum(1 for event_id in sent if sources[event_id] > 1),
        )

    def line(self, **extra: object) -> str:
        head = (
            f"fault=takeover_kill9 accepted={self.accepted} in_stream={self.in_stream} "
            f"lost={self.lost} duplicates={self.duplicates} held={self.held}"
        )
        tail = " ".join(f"{key}={value}" for key, value in extra.items())
        counts = f"published={self.published} unobserved={self.unobserved} repeats={self.repeats}"
        return " ".join(part for part in (head, tail, counts) if part)
