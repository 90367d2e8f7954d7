"""The WhatsApp Cloud API gateway: `POST {api_url}/{phone_number_id}/messages` over http1.py.

A session belongs to one sender task and owns that task's keep-alive
connections. `send` never raises for an API answer or a network failure.
`error_message` for failures without an answer:

- `"connect_timeout"`, `"connect_error: ..."`: the request was not sent;
- `"timeout"`, `"connection_lost: ..."`: the request may have reached the API.
"""

from __future__ import annotations

import secrets
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import msgspec

from engine.core.callback_reference import CallbackReferences
from engine.core.rendering import request_body
from engine.gateway import AccountEndpoint, OutgoingMessage, SendResult
from engine.transport.http1 import (
    ConnectionsByOrigin,
    Header,
    HTTPConnectionError,
    HTTPResponseTooLarge,
    HTTPTimeout,
    Origin,
    split_url,
)


class _MessageId(msgspec.Struct):
    id: str


class _GraphError(msgspec.Struct):
    code: int | None = None
    message: str | None = None


class _Answer(msgspec.Struct):
    messages: list[_MessageId] | None = None
    error: _GraphError | None = None


_decode_answer = msgspec.json.Decoder(_Answer).decode
_encode = msgspec.json.Encoder().encode


class _Route(msgspec.Struct, frozen=True):
    """Everything about an endpoint that does not change per message."""

    origin: Origin
    target: str
    headers: list[Header]


def _route_for(endpoint: AccountEndpoint) -> _Route:
    origin, base = split_url(endpoint.api_url)
    target = f"{base.rstrip('/')}/{endpoint.phone_number_id}/messages"
    headers = [
        # stripped: the request head refuses a value ending in a space (an empty token)
        (b"authorization", f"Bearer {endpoint.access_token}".strip().encode()),
        (b"content-type", b"application/json"),
    ]
    return _Route(origin, target, headers)


def encode_message(message: OutgoingMessage, references: CallbackReferences) -> bytes:
    """The Cloud API request body for one message."""
    return _encode(request_body(message, references.issue(message.recipient_id)))


def result_from_answer(status: int, body: bytes) -> SendResult:
    """Turn one HTTP answer of the send endpoint into a SendResult (pure)."""
    try:
        answer = _decode_answer(body)
    except msgspec.DecodeError:
        snippet = body[:200].decode("utf-8", "replace")
        return SendResult(
            ok=False, http_status=status, error_message=f"unreadable answer: {snippet}"
        )
    if 200 <= status < 300 and answer.messages:
        return SendResult(ok=True, provider_message_id=answer.messages[0].id, http_status=status)
    if answer.error is not None:
        return SendResult(
            ok=False,
            http_status=status,
            error_code=answer.error.code,
            error_message=answer.error.message,
        )
    return SendResult(ok=False, http_status=status, error_message="answer without a message id")


class CloudApiSession:
    def __init__(self, gateway: CloudApiGateway, connections: ConnectionsByOrigin) -> None:
        self._gateway = gateway
        self._connections = connections

    async def send(self, endpoint: AccountEndpoint, message: OutgoingMessage) -> SendResult:
        route = self._gateway.route(endpoint)
        connection = self._connections.get(route.origin)
        try:
            response = await connection.request(
                "POST",
                route.target,
                route.headers,
                encode_message(message, self._gateway.references),
            )
        except HTTPTimeout as exc:
            return SendResult(
                ok=False,
                error_message="timeout" if exc.request_sent else "connect_timeout",
                may_have_arrived=exc.request_sent,
            )
        except HTTPConnectionError as exc:
            kind = "connection_lost" if exc.request_sent else "connect_error"
            return SendResult(
                ok=False, error_message=f"{kind}: {exc}", may_have_arrived=exc.request_sent
            )
        except HTTPResponseTooLarge as exc:
            # An answer, but not one the Cloud API gives: the send fails (never retried:
            # its status may say it was accepted, without a message id we could read).
            return SendResult(ok=False, http_status=exc.status, error_message=str(exc))
        return result_from_answer(response.status, response.body)


class CloudApiGateway:
    """`engine.gateway.Gateway` for the real Cloud API (and the simulator)."""

    _MAX_ROUTES = 4096  # endpoints change rarely; the cap only guards against leaks

    def __init__(
        self,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        callback_references: CallbackReferences | None = None,
    ) -> None:
        """`callback_references`: the daemon's (engine/store/secrets.py), so that its
        webhooks recognise them; by default a key of this gateway's own."""
        self.references = callback_references or CallbackReferences(secrets.token_bytes(32))
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._ssl_context = ssl_context
        self._routes: dict[AccountEndpoint, _Route] = {}

    def route(self, endpoint: AccountEndpoint) -> _Route:
        route = self._routes.get(endpoint)
        if route is None:
            if len(self._routes) >= self._MAX_ROUTES:
                self._routes.clear()
            route = self._routes[endpoint] = _route_for(endpoint)
        return route

    @asynccontextmanager
    async def open_session(self) -> AsyncIterator[CloudApiSession]:
        async with ConnectionsByOrigin(
            connect_timeout=self._connect_timeout,
            read_timeout=self._read_timeout,
            ssl_context=self._ssl_context,
        ) as connections:
            yield CloudApiSession(self, connections)
