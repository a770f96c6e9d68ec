"""A LiveKit-protocol development server: signalling, data channels, Twirp, webhooks.

A development and test tool, not an SFU: it routes data packets (user packets, text
and byte streams, legacy transcriptions) between participants over WebRTC data
channels and forwards no media. See docs/devserver.md.

    await serve("127.0.0.1", 7880, "devkey", "secret")      # in code
    python -m relay.dev.server --host H --port P --api-key K --api-secret S
"""

from relay.dev.server.cli import main
from relay.dev.server.server import DevServer, DevServerConfig, serve

__all__ = ["DevServer", "DevServerConfig", "main", "serve"]
