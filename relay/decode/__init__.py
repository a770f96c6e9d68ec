"""Decoders: raw items from the LiveKit handlers to contract events (pure, never raise)."""

from relay.decode.roles import classify_role
from relay.decode.room_decoder import RoomDecoder

__all__ = ["RoomDecoder", "classify_role"]
