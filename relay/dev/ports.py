"""The one free-port helper: a TCP port nothing listens on, on one address.

`python -m relay.dev.ports ADDR` prints one: `NetNS.free_port` asks it inside a
namespace, where only that namespace's kernel knows which ports are taken.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Sequence

LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port free on `host` now (the kernel's pick; a connect to it is refused)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    print(free_port(args[0] if args else LOOPBACK))
    return 0


if __name__ == "__main__":
    sys.exit(main())
