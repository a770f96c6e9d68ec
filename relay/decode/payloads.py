"""Reading payloads safely: JSON parsing that never raises, tolerant getters, fingerprints.

Nothing here raises on bad input: parsing returns an error code, getters return None.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from typing import Any

# Deeper JSON is refused: serializing or validating it later could hit the recursion limit.
MAX_JSON_DEPTH = 64


@dataclasses.dataclass(frozen=True, slots=True)
class Parsed:
    """A payload parsed as one JSON object; `error` says why `obj` is None."""

    obj: dict[str, Any] | None
    error: str | None  # invalid_utf8, invalid_json, not_an_object, too_deep


class _TooDeep(Exception):
    pass


def parse_json_object(payload: bytes) -> Parsed:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return Parsed(None, "invalid_utf8")
    return parse_json_text(text)


def parse_json_text(text: str) -> Parsed:
    try:
        value = json.loads(text.removeprefix("\ufeff"), parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # JSONDecodeError, NaN, ints over the digit limit
        return Parsed(None, "invalid_json")
    if not isinstance(value, dict):
        return Parsed(None, "not_an_object")
    try:
        return Parsed(_clean(value, 0), None)
    except _TooDeep:
        return Parsed(None, "too_deep")


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON: they would make the event unreadable to strict parsers.
    raise ValueError(f"not JSON: {name}")


def _clean(value: Any, depth: int) -> Any:
    """Bound the depth and mend lone surrogates ("\\ud800" escapes cannot be encoded)."""
    if isinstance(value, str):
        return clean_str(value)
    if isinstance(value, dict | list):
        if depth >= MAX_JSON_DEPTH:
            raise _TooDeep
        if isinstance(value, list):
            return [_clean(child, depth + 1) for child in value]
        return {clean_str(key): _clean(child, depth + 1) for key, child in value.items()}
    return value


def clean_str(text: str) -> str:
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")
    return text


def get_str(obj: dict[str, Any], key: str) -> str | None:
    """The field if it is a string, else None (wrong types count as absent)."""
    value = obj.get(key)
    return value if isinstance(value, str) else None


def get_id(obj: dict[str, Any], key: str) -> str | None:
    """An identifier: a non-empty string, or an integer some senders use instead."""
    value = obj.get(key)
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def get_flag(obj: dict[str, Any], key: str) -> bool:
    value = obj.get(key)
    return value is True or (isinstance(value, str) and value.lower() == "true")


def digest(text: str) -> str:
    """A short stable fingerprint of a text, for dedupe keys and state."""
    return hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16]


def segment_dedupe_key(segment_id: str, final: bool, text: str) -> str:
    """Names one transcript update wherever it came from (legacy segment, caption)."""
    return f"segment:{segment_id}:{'final' if final else 'partial'}:{digest(text)}"


def payload_fields(payload: bytes | str) -> dict[str, str]:
    """A payload as text, or as base64 with `encoding` when it is not UTF-8."""
    if isinstance(payload, str):
        return {"payload": clean_str(payload)}
    try:
        return {"payload": payload.decode("utf-8")}
    except UnicodeDecodeError:
        return {"payload": base64.b64encode(payload).decode("ascii"), "encoding": "base64"}
