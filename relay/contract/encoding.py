"""JSON encoding of the contract: orjson, each event's variable parts encoded once.

`data` and `source` are encoded canonically (sorted keys, no spaces) once per event; the
same bytes feed the deterministic id (relay.pipeline.ids) and are appended to the entry
the sinks write, so an event is never serialized twice. The bytes are those of the
standard library's `json.dumps(sort_keys=True, separators=(",", ":"),
ensure_ascii=False)` for every value a decoder makes, so ids minted by earlier versions
stay the same (tests/pipeline/test_ids.py pins them), with one documented exception:
floats written in exponent form (orjson `1e-7`, the standard library `1e-07`).

orjson refuses integers beyond 64 bits and strings with lone surrogates; those values
take the standard library's path, which accepts both.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import orjson

_CANONICAL = orjson.OPT_SORT_KEYS


def _plain(value: Any) -> Any:
    """What the standard library cannot encode: dataclasses as objects, the rest as text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return repr(value)


_FALLBACK = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_plain
)


def canonical(value: Any) -> bytes:
    """Sorted keys, no spaces, UTF-8: the same value always gives the same bytes."""
    try:
        return orjson.dumps(value, option=_CANONICAL)
    except TypeError:  # orjson.JSONEncodeError: a big int, a lone surrogate, a stray type
        return _FALLBACK.encode(value).encode("utf-8", "surrogatepass")


def document(head: dict[str, Any], data: bytes, source: bytes) -> bytes:
    """An event's JSON: `head` (its other fields, in order), then the encoded data and source."""
    try:
        out = orjson.dumps(head)
    except TypeError:  # a lone surrogate in a room name, say: replaced, never a crash
        out = _FALLBACK.encode(head).encode("utf-8", "replace")
    return b'%s,"data":%s,"source":%s}' % (out[:-1], data, source)


def encode(value: Any) -> bytes:
    """A document (keys in their order) as UTF-8 JSON (dead letters)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return _FALLBACK.encode(value).encode("utf-8", "replace")
