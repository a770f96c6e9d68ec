"""The relay's exception types: one base, a few subclasses.

Library errors are wrapped where they enter (`raise SinkError(...) from exc`).
"""


class RelayError(Exception):
    """Base of every error the relay raises on purpose."""


class ConfigError(RelayError):
    """Configuration is invalid; the message names the variable."""


class StartError(RelayError):
    """A start step of the worker failed (the HTTP port is taken); the message names the
    setting to change."""


class SinkError(RelayError):
    """A sink could not write a batch (the batch is kept and retried)."""
