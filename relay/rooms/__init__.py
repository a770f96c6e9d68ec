"""Which rooms this process observes: the wanted set and one observer task per room."""

from relay.rooms.manager import (
    DeploymentUnavailableError,
    RoomCapacityError,
    RoomManager,
    ShuttingDownError,
)

__all__ = ["DeploymentUnavailableError", "RoomCapacityError", "RoomManager", "ShuttingDownError"]
