"""`python -m relay.dev.server`: see relay.dev.server.cli."""

import sys

from relay.dev.server.cli import main

if __name__ == "__main__":
    sys.exit(main())
