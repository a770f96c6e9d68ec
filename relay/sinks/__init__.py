"""Sinks: where accepted events are written (Redis Streams; stdout for development)."""

from relay.contract.event import Entry
from relay.contract.sink import Sink
from relay.sinks.redis_streams import RedisStreamsSink
from relay.sinks.stdout import StdoutSink

__all__ = ["Entry", "RedisStreamsSink", "Sink", "StdoutSink"]
