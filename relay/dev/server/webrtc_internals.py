"""Every use of an aiortc or aioice internal by the dev server, checked before use.

- aioice gathers ICE candidates on every address of every interface and takes no
  filter, so the dev server replaces `aioice.ice.get_host_addresses` in its own process:
  it must announce the one address it serves on (a safety rule, as `--host` is). That
  function is not documented API, so `check()` first makes sure it is there, takes
  `(use_ipv4, use_ipv6)` (aioice calls it with those keywords) and is still what
  `Connection.gather_candidates` looks up. If not, the dev server refuses to start:
  without the replacement it would bind and announce every host address.
- `aiortc.sdp.candidate_from_sdp` (not exported by `aiortc` itself) parses the
  candidates clients trickle; without it no client could connect, so it is checked too.

A library version other than the ones this was tested with logs one warning
(`devserver.untested_webrtc_version`) and goes on when the checks above pass.
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

import aioice.ice
import aiortc.sdp
import structlog
from aiortc import RTCIceCandidate

log = structlog.get_logger("relay.dev.server.webrtc_internals")

# major.minor of each library the dev server was tested with.
TESTED_VERSIONS: Mapping[str, tuple[str, ...]] = {"aioice": ("0.13",), "aiortc": ("1.16",)}
HOST_LOOKUP = "get_host_addresses"
HOST_LOOKUP_PARAMS = ["use_ipv4", "use_ipv6"]
PARSE_CANDIDATE = "candidate_from_sdp"


class InternalsChanged(RuntimeError):
    """aiortc/aioice no longer have what the dev server relies on: unsafe to serve."""


def host_lookup_problem(ice: ModuleType | Any) -> str | None:
    """Why `ice.get_host_addresses` cannot be replaced safely, or None when it can."""
    lookup = getattr(ice, HOST_LOOKUP, None)
    if not callable(lookup):
        return f"aioice.ice.{HOST_LOOKUP} is gone"
    try:
        params = list(inspect.signature(lookup).parameters)
    except (TypeError, ValueError):
        return f"aioice.ice.{HOST_LOOKUP} has no inspectable signature"
    if params != HOST_LOOKUP_PARAMS:
        return f"aioice.ice.{HOST_LOOKUP} takes {params}, not {HOST_LOOKUP_PARAMS}"
    gather = getattr(getattr(ice, "Connection", None), "gather_candidates", None)
    code = getattr(gather, "__code__", None)
    if code is None or HOST_LOOKUP not in code.co_names:
        return f"aioice.ice.Connection.gather_candidates no longer calls {HOST_LOOKUP}"
    return None


def parser_problem(sdp: ModuleType | Any) -> str | None:
    """Why `sdp.candidate_from_sdp` cannot parse trickled candidates, or None."""
    parse = getattr(sdp, PARSE_CANDIDATE, None)
    if not callable(parse):
        return f"aiortc.sdp.{PARSE_CANDIDATE} is gone"
    return None


def version_warning(package: str, version: str) -> str | None:
    """A warning when `version` of `package` is not one the dev server was tested with."""
    tested = TESTED_VERSIONS.get(package, ())
    if any(version == v or version.startswith(v + ".") for v in tested):
        return None
    return f"{package} {version} is untested (tested: {', '.join(tested)}.x)"


def check(
    ice: ModuleType | Any = aioice.ice,
    sdp: ModuleType | Any = aiortc.sdp,
    versions: Mapping[str, str] | None = None,
) -> None:
    """Raise InternalsChanged if an internal the dev server needs changed shape; log
    one warning for an untested library version."""
    problems = [p for p in (host_lookup_problem(ice), parser_problem(sdp)) if p is not None]
    if problems:
        raise InternalsChanged(
            "the dev server cannot run with this aiortc/aioice: " + "; ".join(problems)
        )
    found = versions if versions is not None else _installed_versions()
    warnings = [version_warning(package, version) for package, version in found.items()]
    for warning in warnings:
        if warning is not None:
            _warn_once(warning)


def _installed_versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in TESTED_VERSIONS}


@functools.cache
def _warn_once(warning: str) -> None:
    log.warning("devserver.untested_webrtc_version", detail=warning)


def pin_host_addresses(addresses: list[str], ice: ModuleType | Any = aioice.ice) -> None:
    """Make aioice gather candidates on `addresses` only, in this process (after
    `check`, which raises rather than leave aioice announcing every host address)."""
    check(ice)
    pinned = list(addresses)

    def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return list(pinned)

    setattr(ice, HOST_LOOKUP, get_host_addresses)


def parse_candidate(text: str) -> RTCIceCandidate:
    """An RTCIceCandidate from the SDP text of one candidate (no `candidate:` prefix)."""
    parse: Callable[[str], RTCIceCandidate] = getattr(aiortc.sdp, PARSE_CANDIDATE)
    return parse(text)
