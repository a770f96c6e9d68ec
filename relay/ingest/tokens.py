"""Ingest tokens: short-lived HS256 JWTs that a customer's backend mints for one page.

Claims: `room`, `session` (what the page may append to), `exp`, and optionally `origin`
(the only browser origin that may use the token). A backend mints them with
`mint_ingest_token(secret, room=..., session=..., ttl_s=...)`, or `relay ingest-token`.
"""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Literal

import jwt

ALGORITHM = "HS256"
AUDIENCE = "relay-ingest"
# What a token may be refused for (the answer's `reason`, and the rejection metric).
TokenProblem = Literal["missing_token", "invalid_token", "expired_token"]


class TokenError(Exception):
    def __init__(self, problem: TokenProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem


@dataclasses.dataclass(frozen=True, slots=True)
class IngestGrant:
    """What a valid token allows: appending to one room and session until `expires_at`."""

    room: str
    session: str
    expires_at: float
    origin: str | None = None


def mint_ingest_token(
    secret: str, *, room: str, session: str, ttl_s: float, origin: str | None = None
) -> str:
    """A token for one page: it may append events of `room`/`session` for `ttl_s` seconds
    (from `origin` only, when given). `secret` is relay's `ingest.secret`."""
    if not secret:
        raise ValueError("the ingest secret is empty (RELAY_INGEST__SECRET)")
    if not room or not session:
        raise ValueError("room and session must be non-empty")
    if ttl_s <= 0:
        raise ValueError("ttl_s must be positive")
    now = int(time.time())
    claims: dict[str, object] = {
        "aud": AUDIENCE,
        "room": room,
        "session": session,
        "iat": now,
        "exp": now + int(ttl_s),
    }
    if origin:
        claims["origin"] = origin
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def verify_ingest_token(secret: str, token: str) -> IngestGrant:
    """The grant of a token signed with `secret`; TokenError if it is forged, malformed or
    expired."""
    if not token:
        raise TokenError("missing_token", "no ingest token (Authorization: Bearer, or 'token')")
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            options={"require": ["exp", "room", "session"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenError("expired_token", "the ingest token has expired") from None
    except jwt.PyJWTError as exc:
        raise TokenError("invalid_token", f"invalid ingest token: {exc}") from None
    room, session, origin = claims.get("room"), claims.get("session"), claims.get("origin")
    if not isinstance(room, str) or not isinstance(session, str) or not room or not session:
        raise TokenError("invalid_token", "invalid ingest token: room and session must be strings")
    if origin is not None and not isinstance(origin, str):
        raise TokenError("invalid_token", "invalid ingest token: origin must be a string")
    return IngestGrant(room, session, float(claims["exp"]), origin or None)


_TTL = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl_s(text: str) -> float:
    """`90`, `90s`, `15m`, `1h`, `1d` -> seconds; ValueError naming the form otherwise."""
    match = _TTL.match(text.strip())
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(f"bad ttl {text!r}: use seconds or a number with s, m, h or d (1h)")
    return float(match.group(1)) * _UNIT_S[match.group(2)]
