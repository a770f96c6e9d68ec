"""The import graph runs one way: observer -> (nothing of decode), decode -> contract,
pipeline -> contract, sinks -> contract. A later change that bends it fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "relay"

# stage -> the relay modules it may not import (neighbours it must not reach into).
FORBIDDEN = {
    "contract": ("relay.observer", "relay.decode", "relay.pipeline", "relay.sinks", "relay.rooms"),
    "observer": ("relay.decode", "relay.pipeline", "relay.sinks", "relay.rooms", "relay.http"),
    "decode": ("relay.observer", "relay.pipeline", "relay.sinks", "relay.rooms", "relay.http"),
    "pipeline": ("relay.observer", "relay.decode", "relay.sinks", "relay.rooms", "relay.http"),
    "sinks": ("relay.observer", "relay.decode", "relay.pipeline", "relay.rooms", "relay.http"),
    # Reads the streams like any consumer: never the runtime's stages.
    "analytics": (
        "relay.observer",
        "relay.decode",
        "relay.pipeline",
        "relay.sinks",
        "relay.rooms",
        "relay.http",
        "relay.worker",
    ),
    # Browser ingest feeds the decode stage like an observed room: contract and decode only.
    "ingest": ("relay.observer", "relay.pipeline", "relay.sinks", "relay.rooms", "relay.http"),
    "discovery": ("relay.decode", "relay.sinks", "relay.http"),
}
# Nothing of the runtime may import the development toolkit (it needs the dev extra).
RUNTIME_FORBIDDEN = ("relay.dev", "aiortc", "aioice", "av")


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text("utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def reaches(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


@pytest.mark.parametrize("stage", sorted(FORBIDDEN))
def test_each_stage_imports_only_what_its_layer_allows(stage: str) -> None:
    files = sorted((PACKAGE / stage).rglob("*.py"))
    assert files, f"relay/{stage} has no modules"
    bad = [
        f"{path.relative_to(PACKAGE.parent)} imports {module}"
        for path in files
        for module in sorted(imports_of(path))
        if reaches(module, FORBIDDEN[stage])
    ]
    assert bad == []


def test_the_runtime_never_imports_the_dev_toolkit() -> None:
    runtime = [p for p in PACKAGE.rglob("*.py") if p.parts[len(PACKAGE.parts)] != "dev"]
    bad = [
        f"{path.relative_to(PACKAGE.parent)} imports {module}"
        for path in runtime
        if path != PACKAGE / "cli.py"  # imports `relay demo`/`devserver` lazily, behind the extra
        for module in sorted(imports_of(path))
        if reaches(module, RUNTIME_FORBIDDEN)
    ]
    assert bad == []


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    module = tmp_path / "bent.py"
    module.write_text("from relay.decode.stage import DecodeStage\n", "utf-8")
    assert reaches("relay.decode.stage", FORBIDDEN["observer"])
    assert "relay.decode.stage" in imports_of(module)


SHARED = ("keys.py", "redis_client.py", "logs.py", "native_logs.py")


def test_the_shared_modules_import_only_the_settings_and_each_other() -> None:
    allowed = {"relay.config", *(f"relay.{name.removesuffix('.py')}" for name in SHARED)}
    bad = [
        f"relay/{name} imports {module}"
        for name in SHARED
        for module in sorted(imports_of(PACKAGE / name))
        if reaches(module, ("relay",)) and module not in allowed
    ]
    assert bad == []
