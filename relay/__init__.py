"""relay: LiveKit room events to Redis Streams and Prometheus."""

__version__ = "0.1.0"
