"""Which rooms may be wanted: name globs or /regexes/ (include, exclude), metadata."""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Mapping, Sequence

from relay.errors import ConfigError


def _pattern(text: str) -> re.Pattern[str]:
    """`/.../` is a regular expression (full match); anything else a glob."""
    if len(text) >= 2 and text.startswith("/") and text.endswith("/"):
        try:
            return re.compile(text[1:-1])
        except re.error as exc:
            raise ConfigError(
                f"RELAY_DISCOVERY__INCLUDE/EXCLUDE: bad regex {text!r}: {exc}"
            ) from None
    return re.compile(fnmatch.translate(text))


class RoomFilter:
    def __init__(
        self,
        include: Sequence[str] = ("*",),
        exclude: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self._include = [_pattern(p) for p in include]
        self._exclude = [_pattern(p) for p in exclude]
        self._metadata = dict(metadata or {})

    def accepts(self, room: str, metadata: str = "") -> bool:
        if not any(p.fullmatch(room) for p in self._include):
            return False
        if any(p.fullmatch(room) for p in self._exclude):
            return False
        return self._metadata_matches(metadata)

    def _metadata_matches(self, metadata: str) -> bool:
        if not self._metadata:
            return True
        try:
            parsed = json.loads(metadata) if metadata else {}
        except ValueError:
            return False
        if not isinstance(parsed, dict):
            return False
        return all(str(parsed.get(key)) == value for key, value in self._metadata.items())
