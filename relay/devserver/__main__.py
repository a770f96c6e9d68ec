"""`python -m relay.devserver`: see relay.devserver.cli."""

import sys

from relay.devserver.cli import main

if __name__ == "__main__":
    sys.exit(main())
