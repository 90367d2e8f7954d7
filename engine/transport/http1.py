"""A minimal HTTP/1.1 client: one keep-alive connection per origin over trio streams.

Each sender task owns its connections (`ConnectionsByOrigin`), so nothing here
locks or pools: a shared pool costs more CPU than the request itself
(measured: ~3.4 ms of CPU per request for a shared 50-connection pool).

The bytes are engine/core/http1_codec.py's: a route's request head is built once,
a request is that head, its Content-Length and its body in one write, and the
answer is parsed strictly as it arrives (an answer comes from a tenant's apiUrl:
anything ambiguous is an error, and a connection whose framing is in any doubt is
not reused). h11 did the same at ~0.14 ms of CPU per request, the codec at ~0.01 ms;
over plain TCP the socket is also read and written directly (see `_DIRECT_IO`).

Retry rule (at-most-once). A request is written to the network at most once,
except in the two cases where the server cannot have processed it:

1. Before reusing an idle keep-alive connection we poll its socket. If it is
   readable (the server sent EOF, a reset, or stray bytes), the connection is
   discarded and a fresh one opened; nothing was written to the old one.
2. If writing the request fails on a *reused* connection before the whole
   request was handed to the kernel, the server never saw a complete request,
   so we reconnect and write it once more (once only).

Once the complete request has been written, any failure before the complete
response (EOF, reset, timeout, protocol error) is raised with
`request_sent=True`, for every method, and never retried here: the caller
decides, because the server may have acted on it. Failures while connecting
carry `request_sent=False`.
"""

from __future__ import annotations

import os
import select
import ssl
from functools import lru_cache
from types import TracebackType
from typing import Literal
from urllib.parse import urlsplit

import msgspec
import trio

from engine.core.http1_codec import BodyTooLarge, ProtocolError, RequestHead, ResponseReader

Header = tuple[bytes, bytes]  # as in engine.core.http1_codec


class Origin(msgspec.Struct, frozen=True):
    scheme: Literal["http", "https"]
    host: str
    port: int


class Response(msgspec.Struct, frozen=True):
    status: int
    headers: list[Header]  # names lowercased, values without surrounding spaces
    body: bytes


class HTTPError(Exception):
    """The request produced no complete response.

    `request_sent` is False only when the server cannot have received the request.
    """

    def __init__(self, message: str, *, request_sent: bool) -> None:
        super().__init__(message)
        self.request_sent = request_sent


class HTTPTimeout(HTTPError):
    """Connecting, or waiting for the response, took longer than allowed."""


class HTTPResponseTooLarge(HTTPError):
    """The answer's body exceeded `max_response_bytes`: it was not read further."""

    def __init__(self, status: int, limit: int) -> None:
        super().__init__(f"answer larger than {limit} bytes", request_sent=True)
        self.status = status


class HTTPConnectionError(HTTPError):
    """Refused, reset, closed by the server, or an invalid HTTP answer."""


class HTTPInvalidRequest(HTTPConnectionError):
    """The request cannot be written (e.g. a header value with a line break, from a
    tenant's access token): nothing was sent. A connection error for callers that
    only tell sent from unsent."""


@lru_cache(maxsize=256)
def split_url(url: str) -> tuple[Origin, str]:
    """`https://host:port/a/b?q` → (Origin, "/a/b?q"). Cached: callers parse per request."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    port = parts.port or (443 if scheme == "https" else 80)
    target = parts.path or "/"
    if parts.query:
        target = f"{target}?{parts.query}"
    origin = Origin("https" if scheme == "https" else "http", parts.hostname, port)
    return origin, target


_CONNECTION_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
_MAX_CACHED_HEADS = 64  # distinct (method, target, headers) per connection; a guard, not a tuning


class HTTPConnection:
    """One keep-alive connection to one origin, opened lazily, reopened when needed.

    Not safe for concurrent use: one task sends one request at a time.
    """

    def __init__(
        self,
        origin: Origin,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
        receive_size: int = 65536,
        max_response_bytes: int = 1 << 20,
    ) -> None:
        self.origin = origin
        # An answer is read into memory: a server (or a tenant's apiUrl) that sends
        # gigabytes must not take the daemon's memory with it.
        self._max_response_bytes = max_response_bytes
        self._connect_timeout = connect_timeout
        # Bounds writing the request and reading the complete response.
        self._read_timeout = read_timeout
        self._ssl_context = ssl_context
        default_port = 443 if origin.scheme == "https" else 80
        host = origin.host if origin.port == default_port else f"{origin.host}:{origin.port}"
        self._host = host.encode("idna")
        # Requests of a route differ only in their body: their heads are built once.
        self._heads: dict[tuple[str, str, tuple[Header, ...]], RequestHead] = {}
        self._reader = ResponseReader(max_body_bytes=max_response_bytes)
        # Plain TCP is read into this one buffer (no allocation per read).
        self._receive_buffer = memoryview(bytearray(receive_size))
        self._receive_size = receive_size
        self._stream: trio.abc.Stream | None = None
        self._fd = -1  # plain TCP only: the socket, written and read directly (_write_all)
        self._poller: select.poll | None = None
        self.connections_opened = 0

    def _head(self, method: str, target: str, headers: list[Header]) -> RequestHead:
        key = (method, target, tuple(headers))
        head = self._heads.get(key)
        if head is None:
            try:
                head = RequestHead(method, target, self._host, headers)
            except ValueError as exc:
                raise HTTPInvalidRequest(f"invalid request: {exc}", request_sent=False) from None
            if len(self._heads) >= _MAX_CACHED_HEADS:
                self._heads.clear()
            self._heads[key] = head
        return head

    async def request(
        self, method: str, target: str, headers: list[Header], body: bytes = b""
    ) -> Response:
        """Send one request, return the complete response.

        `headers` must not contain Host, Content-Length or Transfer-Encoding: the first
        two are added here. A head that cannot be written raises HTTPInvalidRequest.
        """
        data = self._head(method, target, headers).encode(body)

        if self._poller is not None and self._poller.poll(0):
            await self._discard()  # rule 1: a dead idle connection never carries a request
        reused = self._stream is not None
        if not reused:
            await self._connect()
        completed = False
        try:
            # One deadline for writing the request and reading the whole response (a bare
            # CancelScope: trio.fail_after's context-manager generator adds a few µs).
            with trio.CancelScope(deadline=trio.current_time() + self._read_timeout):
                try:
                    await self._send(data)
                except HTTPConnectionError:
                    if not reused:
                        raise
                    await self._connect()  # rule 2: the server never saw the whole request
                    await self._send(data)
                response = await self._receive_response(head_request=method == "HEAD")
                completed = True
                return response
            # Only the deadline ends the scope without a response: counted as sent even
            # if the write had not finished, since it may yet arrive whole.
            raise HTTPTimeout(
                f"no complete response within {self._read_timeout} s", request_sent=True
            )
        finally:
            if not completed:  # failed or cancelled mid-exchange: the framing is lost
                await self._discard()

    async def _connect(self) -> None:
        await self._discard()
        origin = self.origin
        stream: trio.abc.Stream | None = None
        try:
            with trio.fail_after(self._connect_timeout):
                tcp = await trio.open_tcp_stream(origin.host, origin.port)
                stream = tcp
                if origin.scheme == "https":
                    context = self._ssl_context or _default_ssl_context()
                    tls = trio.SSLStream(
                        tcp, context, server_hostname=origin.host, https_compatible=True
                    )
                    stream = tls
                    await tls.do_handshake()
        except BaseException as exc:
            if stream is not None:
                await trio.aclose_forcefully(stream)
            if isinstance(exc, trio.TooSlowError):
                raise HTTPTimeout(
                    f"connect to {origin.host}:{origin.port} timed out", request_sent=False
                ) from None
            if isinstance(exc, (*_CONNECTION_ERRORS, ssl.SSLError)):
                # trio reports a failed TLS handshake as BrokenResourceError whose
                # cause says why (e.g. certificate verify failed): name the cause.
                reason = exc.__cause__ or exc
                raise HTTPConnectionError(
                    f"connect to {origin.host}:{origin.port} failed: "
                    f"{str(reason) or type(reason).__name__}",
                    request_sent=False,
                ) from exc
            raise
        self._stream = stream
        self._fd = tcp.socket.fileno() if stream is tcp and _DIRECT_IO else -1
        # Registered once per connection: the idle check before each reuse is one poll(2).
        self._poller = select.poll()
        self._poller.register(tcp.socket.fileno(), select.POLLIN)
        self.connections_opened += 1

    async def _send(self, data: bytes) -> None:
        assert self._stream is not None
        try:
            if self._fd >= 0:
                await _write_all(self._fd, data)
            else:
                await self._stream.send_all(data)  # head and body in one write
        except _CONNECTION_ERRORS as exc:
            await self._discard()
            raise HTTPConnectionError(
                f"connection broke while writing: {exc!r}", request_sent=False
            ) from exc

    async def _receive_some(self) -> bytes | bytearray | memoryview:
        if self._fd >= 0:
            return await _read_into(self._fd, self._receive_buffer)
        assert self._stream is not None
        return await self._stream.receive_some(self._receive_size)

    async def _receive_response(self, *, head_request: bool) -> Response:
        reader = self._reader
        reader.start(head_request=head_request)
        try:
            while True:
                data = await self._receive_some()
                if data:
                    if reader.feed(data):
                        break
                elif not reader.received_any:
                    raise HTTPConnectionError(
                        "server closed the connection before answering", request_sent=True
                    )
                else:
                    reader.feed_eof()
                    break
        except ProtocolError as exc:
            raise HTTPConnectionError(
                f"invalid or truncated response: {exc}", request_sent=True
            ) from exc
        except BodyTooLarge as exc:
            raise HTTPResponseTooLarge(exc.status, self._max_response_bytes) from None
        except _CONNECTION_ERRORS as exc:
            raise HTTPConnectionError(
                f"connection broke while reading: {exc!r}", request_sent=True
            ) from exc
        response = Response(reader.status, reader.headers, reader.body)
        if not reader.reusable:  # Connection: close, HTTP/1.0, read to EOF, or stray bytes
            await self.aclose()
        return response

    def _forget(self) -> trio.abc.Stream | None:
        stream, self._stream, self._poller, self._fd = self._stream, None, None, -1
        return stream

    async def _discard(self) -> None:
        stream = self._forget()
        if stream is not None:
            await trio.aclose_forcefully(stream)

    async def aclose(self) -> None:
        stream = self._forget()
        if stream is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                try:
                    await stream.aclose()
                except _CONNECTION_ERRORS:
                    pass


# Plain TCP bypasses trio's socket wrappers, which cost a scheduler round trip per send
# and a failed recv (EAGAIN) before every wait: here a request is one write(2), one
# wait for the answer (the checkpoint) and one readv(2). trio still owns the socket:
# it closes it, and its I/O manager does the waiting (trio.lowlevel.wait_*).
_DIRECT_IO = hasattr(os, "readv")


async def _write_all(fd: int, data: bytes) -> None:
    """Write all of `data`; an OSError means the kernel did not take all of it."""
    try:
        sent = os.write(fd, data)
    except BlockingIOError:
        sent = 0
    if sent == len(data):
        return
    view = memoryview(data)
    while sent < len(view):
        await trio.lowlevel.wait_writable(fd)
        try:
            sent += os.write(fd, view[sent:])
        except BlockingIOError:
            pass


async def _read_into(fd: int, buffer: memoryview) -> memoryview:
    """The next bytes received (empty at EOF), in `buffer`: valid until the next read."""
    while True:
        await trio.lowlevel.wait_readable(fd)  # also the request's checkpoint
        try:
            return buffer[: os.readv(fd, (buffer,))]
        except BlockingIOError:
            pass  # woken without data: wait again


@lru_cache(maxsize=1)
def _default_ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()


class ConnectionsByOrigin:
    """The keep-alive connections of one task, one per origin.

    Owned by a single task; `async with` closes every connection on exit.
    """

    def __init__(
        self,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._ssl_context = ssl_context
        self._connections: dict[Origin, HTTPConnection] = {}

    def get(self, origin: Origin) -> HTTPConnection:
        connection = self._connections.get(origin)
        if connection is None:
            connection = HTTPConnection(
                origin,
                connect_timeout=self._connect_timeout,
                read_timeout=self._read_timeout,
                ssl_context=self._ssl_context,
            )
            self._connections[origin] = connection
        return connection

    async def aclose(self) -> None:
        connections = list(self._connections.values())
        self._connections.clear()
        for connection in connections:
            await connection.aclose()

    async def __aenter__(self) -> ConnectionsByOrigin:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
