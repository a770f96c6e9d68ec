"""Every Redis key the relay uses, from the templates in RedisSettings."""

from __future__ import annotations

from relay.config import RedisSettings


def events_key(settings: RedisSettings) -> str:
    return settings.events_key.format(prefix=settings.prefix)


def room_key(settings: RedisSettings, room: str) -> str:
    # The template wraps the room in braces: a Redis Cluster hash tag.
    return settings.room_key.format(prefix=settings.prefix, room=room)


def dlq_key(settings: RedisSettings) -> str:
    return settings.dlq_key.format(prefix=settings.prefix)


# Conversation analytics (relay/analytics): outputs, then the assembly's own state.


def transcripts_key(settings: RedisSettings) -> str:
    return f"{settings.prefix}:transcripts"


def room_transcripts_key(settings: RedisSettings, room: str) -> str:
    return f"{settings.prefix}:transcripts:{{{room}}}"


def sessions_key(settings: RedisSettings) -> str:
    return f"{settings.prefix}:sessions"


def session_key(settings: RedisSettings, session_id: str) -> str:
    """The summary's hash, for lookup by session id (with a TTL)."""
    return f"{settings.prefix}:session:{session_id}"


def session_written_key(settings: RedisSettings, session_id: str) -> str:
    """The SET NX guard: the summary of a session is written once. Tagged with the sessions
    stream's name: guard and XADD share a Cluster slot."""
    return f"{{{sessions_key(settings)}}}:written:{session_id}"


def utterance_written_key(settings: RedisSettings, utterance_id: str) -> str:
    """The SET NX guard of an utterance in the all-rooms transcripts stream (its slot)."""
    return f"{{{transcripts_key(settings)}}}:written:{utterance_id}"


def analytics_state_key(settings: RedisSettings, room: str) -> str:
    return f"{settings.prefix}:analytics:state:{{{room}}}"


def analytics_pos_key(settings: RedisSettings, room: str) -> str:
    """The id of the last entry of the room's stream the assembly applied."""
    return f"{settings.prefix}:analytics:pos:{{{room}}}"


def analytics_outbox_key(settings: RedisSettings, room: str) -> str:
    """The last step's writes outside the room's slot, until they are delivered."""
    return f"{settings.prefix}:analytics:outbox:{{{room}}}"


def analytics_rooms_key(settings: RedisSettings) -> str:
    """Rooms the analytics have seen events of, scored by the last one (ms): the rooms the
    analytics processes share."""
    return f"{settings.prefix}:analytics:rooms"


def analytics_workers_key(settings: RedisSettings) -> str:
    """Sorted set: analytics process id -> when its registration expires (ms)."""
    return f"{settings.prefix}:analytics:workers"


def analytics_dirty_key(settings: RedisSettings, owner: str) -> str:
    """Rooms with new events for the analytics process `owner` (it owns their lease)."""
    return f"{settings.prefix}:analytics:dirty:{owner}"


# Leases of the analytics (relay/analytics/rooms.py): the relay's lease keys of this kind.
ANALYTICS_LEASES = "analytics:"


# Scale-out (relay/discovery): the shared wanted set, leases, workers, webhooks, control.
# Braces keep a room's keys in one Cluster slot.


def wanted_key(settings: RedisSettings) -> str:
    return f"{settings.prefix}:wanted"


def missing_key(settings: RedisSettings) -> str:
    """room -> reconcile rounds in a row that ListRooms did not show it."""
    return f"{settings.prefix}:wanted:missing"


def token_key(settings: RedisSettings, room: str) -> str:
    return f"{settings.prefix}:token:{{{room}}}"


def lease_key(settings: RedisSettings, room: str, kind: str = "") -> str:
    return f"{settings.prefix}:{kind}lease:{{{room}}}"


def epoch_key(settings: RedisSettings, room: str, kind: str = "") -> str:
    return f"{settings.prefix}:{kind}epoch:{{{room}}}"


def seq_key(settings: RedisSettings, room: str, kind: str = "") -> str:
    """The highest seq any owner of the room may have stamped (reserved in blocks)."""
    return f"{settings.prefix}:{kind}seq:{{{room}}}"


def seen_key(settings: RedisSettings, room: str, kind: str = "") -> str:
    """When an owner last acquired or renewed the room's lease (epoch ms): a takeover's gap."""
    return f"{settings.prefix}:{kind}seen:{{{room}}}"


def found_key(settings: RedisSettings, room: str, kind: str = "") -> str:
    """What the room's last acquisition found in `seen_key` (ms; 0: first owner), kept one
    TTL: an acquire repeated by the same owner (its reply lost) reports the same gap."""
    return f"{settings.prefix}:{kind}found:{{{room}}}"


def handover_key(settings: RedisSettings, room: str) -> str:
    """A planned move: the owner asks for a taker to join before it leaves (its id)."""
    return f"{settings.prefix}:handover:{{{room}}}"


def shadow_key(settings: RedisSettings, room: str) -> str:
    """The process observing the room without its lease, to take it over (its id)."""
    return f"{settings.prefix}:shadow:{{{room}}}"


def shadow_joined_key(settings: RedisSettings, room: str) -> str:
    """Set by the shadow once it joined the room: the owner may leave."""
    return f"{settings.prefix}:shadow:joined:{{{room}}}"


def workers_key(settings: RedisSettings) -> str:
    """Sorted set: worker id -> when its registration expires (ms)."""
    return f"{settings.prefix}:workers"


def worker_key(settings: RedisSettings, worker_id: str) -> str:
    """What a worker announces of itself (pod, pid), expiring unless refreshed."""
    return f"{settings.prefix}:worker:{worker_id}"


def releases_key(settings: RedisSettings) -> str:
    """A counter incremented whenever a process hands leases back (drain, rebalance): the
    others poll it and pick the rooms up at once rather than at their next tick."""
    return f"{settings.prefix}:leases:released"


def reconcile_lease_key(settings: RedisSettings) -> str:
    return f"{settings.prefix}:lease:reconcile"


def webhook_seen_key(settings: RedisSettings, event_id: str) -> str:
    return f"{settings.prefix}:webhook:{event_id}"


def control_key(settings: RedisSettings) -> str:
    return f"{settings.prefix}:control"
