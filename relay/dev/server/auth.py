"""Access tokens: the JWTs `livekit-api`'s AccessToken mints, verified as livekit-server does.

Status codes follow livekit-server (`pkg/service/auth.go`, `utils.go`): a missing,
malformed, badly signed or expired token, an unknown API key and a token without
`roomJoin` are all 401; a join token without identity or room is 400. Twirp calls
without the grant they need fail with Twirp code `unauthenticated` (also 401).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from datetime import timedelta

import jwt
from aiohttp import web
from livekit import api

BEARER = "Bearer "
WEBHOOK_TOKEN_TTL = timedelta(minutes=5)


class AuthError(Exception):
    """A request that must be refused with `status`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class JoinGrant:
    """What a join token allows, read once from its claims."""

    identity: str
    name: str
    room: str
    kind: str
    metadata: str
    attributes: dict[str, str]
    hidden: bool
    can_publish: bool
    can_publish_data: bool
    can_subscribe: bool
    can_update_metadata: bool


class Authenticator:
    """Verifies tokens signed with the server's one API key/secret pair."""

    def __init__(self, api_key: str, api_secret: str) -> None:
        self.api_key = api_key
        self._verifier = api.TokenVerifier(api_key, api_secret)
        self._secret = api_secret

    def claims(self, token: str) -> api.access_token.Claims:
        """The token's claims; AuthError(401) if it is not valid for this server."""
        if not token:
            raise AuthError(401, "invalid authorization header. Must start with Bearer ")
        try:
            return self._verifier.verify(token)
        except jwt.ExpiredSignatureError as exc:
            raise AuthError(401, f"invalid authorization token: {exc}") from exc
        except jwt.InvalidIssuerError as exc:
            raise AuthError(401, "invalid API key") from exc
        except (jwt.InvalidTokenError, ValueError, TypeError) as exc:
            raise AuthError(401, f"invalid authorization token: {exc}") from exc

    def join_grant(self, token: str) -> JoinGrant:
        """Claims of a join token; 401 without roomJoin, 400 without identity or room."""
        claims = self.claims(token)
        video = claims.video
        if video is None or not video.room_join:
            raise AuthError(401, "permissions denied")
        if not claims.identity:
            raise AuthError(400, "participant identity cannot be empty")
        if not video.room:
            raise AuthError(400, "room name cannot be empty")
        return JoinGrant(
            identity=claims.identity,
            name=claims.name,
            room=video.room,
            kind=claims.kind or "standard",
            metadata=claims.metadata,
            attributes=dict(claims.attributes or {}),
            hidden=bool(video.hidden),
            can_publish=bool(video.can_publish),
            can_publish_data=bool(video.can_publish_data),
            can_subscribe=bool(video.can_subscribe),
            can_update_metadata=bool(video.can_update_own_metadata),
        )

    def sign_webhook(self, body: bytes) -> str:
        """An Authorization value for a webhook body, as livekit-server signs it."""
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        token = api.AccessToken(self.api_key, self._secret).with_sha256(digest)
        return str(token.with_ttl(WEBHOOK_TOKEN_TTL).to_jwt())


def request_token(request: web.Request) -> str:
    """The token from `Authorization: Bearer` or the `access_token` query parameter."""
    header = request.headers.get("Authorization", "")
    if header:
        if not header.startswith(BEARER):
            raise AuthError(401, "invalid authorization header. Must start with Bearer ")
        return header[len(BEARER) :].strip()
    return request.query.get("access_token", "")


def require_admin(claims: api.access_token.Claims, room: str) -> None:
    """roomAdmin for `room` (or for any room when the grant names none)."""
    video = claims.video
    if video is None or not video.room_admin or (video.room and video.room != room):
        raise AuthError(401, "permissions denied")


def require_list(claims: api.access_token.Claims) -> None:
    video = claims.video
    if video is None or not video.room_list:
        raise AuthError(401, "permissions denied")


def require_create(claims: api.access_token.Claims) -> None:
    video = claims.video
    if video is None or not video.room_create:
        raise AuthError(401, "permissions denied")
