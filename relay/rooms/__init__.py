"""Which rooms this process observes: the wanted set and one observer task per room."""

from relay.rooms.manager import RoomCapacityError, RoomManager, ShuttingDownError

__all__ = ["RoomCapacityError", "RoomManager", "ShuttingDownError"]
