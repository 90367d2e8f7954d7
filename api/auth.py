"""Bearer tokens: JWT, HS256, the user id in `sub`, `exp` honoured (docs/http-api.md)."""

from __future__ import annotations

import time

import jwt
import msgspec

from api.envelope import ApiError

_ALGORITHM = "HS256"


class InvalidToken(Exception):
    """Missing, malformed, badly signed or expired; `str()` says which."""


def issue_token(secret: str, user_id: str, ttl_seconds: int | None) -> str:
    """A token for `user_id`; without a TTL it never expires."""
    now = int(time.time())
    claims: dict[str, object] = {"sub": user_id, "iat": now}
    if ttl_seconds is not None:
        claims["exp"] = now + ttl_seconds
    return jwt.encode(claims, secret, algorithm=_ALGORITHM)


class Bearer(msgspec.Struct, frozen=True):
    user_id: str
    expires_at: float | None  # `exp`, seconds since the epoch; None: never


def user_from_token(secret: str | None, token: str | None) -> str:
    """The user id a token names, or InvalidToken."""
    return verify_token(secret, token).user_id


def verify_token(secret: str | None, token: str | None) -> Bearer:
    """Who a token names and until when, or InvalidToken."""
    if not token:
        raise InvalidToken("A bearer token is required")
    if not secret:
        raise InvalidToken("Authentication is not configured on this server (ENGINE_JWT_SECRET)")
    try:
        claims = jwt.decode(
            token, secret, algorithms=[_ALGORITHM], options={"require": ["sub"], "verify_exp": True}
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("The bearer token has expired") from None
    except jwt.InvalidTokenError:
        raise InvalidToken("The bearer token is invalid") from None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise InvalidToken("The bearer token names no user (sub)")
    expires = claims.get("exp")
    return Bearer(subject, float(expires) if isinstance(expires, int | float) else None)


def bearer(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def authenticate(secret: str | None, authorization: str | None) -> str:
    """The caller's user id from an Authorization header, or a 401 ApiError."""
    try:
        return user_from_token(secret, bearer(authorization))
    except InvalidToken as error:
        raise ApiError(401, "unauthorized", str(error)) from None
