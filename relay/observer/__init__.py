"""Room observers: one hidden, receive-only LiveKit participant per observed room."""

from relay.observer.room import RoomObserver
from relay.observer.token import RoomTarget, mint_observer_token

__all__ = ["RoomObserver", "RoomTarget", "mint_observer_token"]
