"""Whether the `devkit` extra is installed, asked without importing what it carries.

A production install (`pip install relay`) leaves aiortc out; `relay demo` and
`relay devserver` then say in one line how to get it, instead of a traceback.
"""

from __future__ import annotations

import importlib.util

EXTRA = "devkit"
NEEDED = ("aiortc", "aioice")
INSTALL_HINT = f"pip install 'relay[{EXTRA}]'"


def missing_extra(command: str) -> str | None:
    """The one-line message for `relay <command>` when the extra is absent, else None."""
    for name in NEEDED:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return (
                f"relay {command}: needs the dev toolkit extra ({name} is not installed): "
                f"{INSTALL_HINT}"
            )
    return None
