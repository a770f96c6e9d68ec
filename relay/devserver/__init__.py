"""A LiveKit-protocol development server: signalling, data channels, Twirp, webhooks.

A development and test tool, not an SFU: it routes data packets (user packets, text
and byte streams, legacy transcriptions) between participants over WebRTC data
channels and forwards no media. See docs/devserver.md.

    await serve("127.0.0.1", 7880, "devkey", "secret")      # in code
    python -m relay.devserver --host H --port P --api-key K --api-secret S
"""

from relay.devserver.cli import main
from relay.devserver.server import DevServer, DevServerConfig, serve

__all__ = ["DevServer", "DevServerConfig", "main", "serve"]
