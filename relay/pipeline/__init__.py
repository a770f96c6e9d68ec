"""The pipeline: accepted events get an id and a seq, wait in a bounded buffer, and are
written in batches to the sinks, retried until acknowledged (see docs/delivery.md)."""

from relay.pipeline.ids import IdMinter
from relay.pipeline.pipeline import Pipeline

__all__ = ["IdMinter", "Pipeline"]
