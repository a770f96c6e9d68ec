"""aiortc stays out of a production install: it is a dependency of the `devkit` extra
only, nothing the runtime imports needs it, and `relay demo` / `relay devserver` without
it say in one line what to install."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from relay.dev.extra import EXTRA, INSTALL_HINT

WEBRTC = {"aiortc", "aioice", "av"}
RELAY = Path(__file__).resolve().parents[2] / "relay"


def runtime_closure(dist: str, extras: frozenset[str] = frozenset()) -> set[str]:
    """Every distribution `pip install dist[extras]` pulls in (markers evaluated for
    this interpreter), found through the installed metadata."""
    seen: set[str] = set()
    todo = [(dist, extras)]
    while todo:
        name, extras = todo.pop()
        for line in importlib.metadata.requires(name) or []:
            req = Requirement(line)
            wanted = extras or {""}
            if req.marker is not None and not any(
                req.marker.evaluate({"extra": extra}) for extra in wanted
            ):
                continue
            key = canonicalize_name(req.name)
            if key == canonicalize_name(dist) or key in seen:
                continue
            seen.add(key)
            todo.append((req.name, frozenset(req.extras)))
    return seen


def test_aiortc_is_a_dependency_of_the_extra_only() -> None:
    closure = runtime_closure("relay")
    assert "livekit" in closure and "redis" in closure  # the walk sees real dependencies
    assert not closure & WEBRTC, f"a production install would pull {closure & WEBRTC}"
    assert runtime_closure("relay", frozenset({EXTRA})) >= WEBRTC  # and the extra does
    requirements = [Requirement(line) for line in importlib.metadata.requires("relay") or []]
    [aiortc] = [req for req in requirements if req.name == "aiortc"]
    assert aiortc.marker is not None and aiortc.marker.evaluate({"extra": EXTRA})
    assert not aiortc.marker.evaluate({"extra": ""})


# Run before anything else in a fresh interpreter: importing aiortc, aioice or PyAV fails
# as if they were not installed.
BLOCKER = textwrap.dedent(
    """
    import importlib.abc, sys

    BLOCKED = {blocked!r}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
            return None

    sys.meta_path.insert(0, Block())
    """
).format(blocked=WEBRTC)


def run_blocked(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def runtime_modules() -> list[str]:
    """Every module of the relay package outside relay/dev (and no __main__)."""
    names = []
    for path in sorted(RELAY.rglob("*.py")):
        parts = path.relative_to(RELAY.parent).with_suffix("").parts
        if parts[:2] == ("relay", "dev") or parts[-1] == "__main__":
            continue
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_the_runtime_imports_without_aiortc() -> None:
    modules = runtime_modules()
    assert "relay.worker" in modules and "relay.cli" in modules
    done = run_blocked(
        f"""
        import importlib, sys
        try:
            import aiortc
        except ModuleNotFoundError:
            pass
        else:
            raise SystemExit("the blocker let aiortc through")
        for name in {modules!r}:
            importlib.import_module(name)
        loaded = sorted(m for m in sys.modules if m.partition(".")[0] in BLOCKED)
        print("imported", len({modules!r}), "loaded", loaded)
        """
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == f"imported {len(modules)} loaded []"


def test_relay_run_help_works_without_aiortc() -> None:
    done = run_blocked(
        """
        import sys
        from relay.cli import main
        sys.argv = ["relay", "run", "--help"]
        sys.exit(main())
        """
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--room" in done.stdout and "--sink" in done.stdout


@pytest.mark.parametrize("argv", [["demo"], ["devserver"], ["devserver", "--help"]])
def test_dev_commands_without_the_extra_say_what_to_install(argv: list[str]) -> None:
    done = run_blocked(
        f"""
        import sys
        from relay.cli import main
        sys.exit(main({argv!r}))
        """
    )
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = done.stderr.splitlines()
    assert line.startswith(f"relay {argv[0]}: ") and line.endswith(INSTALL_HINT)
    assert "aiortc" in line
    assert done.stdout == ""
