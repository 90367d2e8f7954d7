"""One keep-alive HTTP/1.1 connection that POSTs webhook bodies, bytes written and read
by hand.

Why not `engine.transport.http1`: its at-most-once rules (an idle poll before each
reuse, the distinction between unsent and maybe-sent) matter for sends, not here, and
every µs the simulator spends at the 3,500 webhook requests per second of one number at
full speed is taken from the machine the daemon under test runs on. For the same reason
the socket is read and written through its descriptor (engine/socket_wire.py), and the
timeout is a bare cancel scope. Webhook requests are all alike (one JSON body, a signature
header) and WhatsApp's webhooks are at-least-once, so every failure here simply means
"post again". Responses may carry `Content-Length`, a chunked body or neither (read to
EOF).
"""

from __future__ import annotations

import trio

from engine.socket_wire import SocketWire
from engine.transport.http1 import Origin


class PostError(Exception):
    """No complete answer: connect failed, connection broke, timeout or a bad answer."""


class PostConnection:
    def __init__(self, origin: Origin, target: str, *, timeout: float = 10.0) -> None:
        if origin.scheme != "http":
            raise ValueError("webhooks are posted over plain http (loopback) only")
        self.origin = origin
        self.timeout = timeout
        host = origin.host if origin.port == 80 else f"{origin.host}:{origin.port}"
        self._head = (
            f"POST {target} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        ).encode()
        self._stream: trio.SocketStream | None = None
        self._wire: SocketWire | None = None
        self._buffer = b""
        self.connections_opened = 0

    async def post(self, body: bytes, signature: bytes) -> int:
        """POST `body` with `X-Hub-Signature-256: signature`; the answer's HTTP status."""
        request = b"%sContent-Length: %d\r\nX-Hub-Signature-256: %s\r\n\r\n%s" % (
            self._head, len(body), signature, body,
        )  # fmt: skip
        try:
            with trio.CancelScope(deadline=trio.current_time() + self.timeout):
                if self._wire is None:
                    self._stream = await trio.open_tcp_stream(self.origin.host, self.origin.port)
                    self._wire = SocketWire(self._stream)
                    self._buffer = b""
                    self.connections_opened += 1
                await self._wire.send_all(request)
                return await self._answer()
            raise PostError(f"no answer within {self.timeout} s")
        except (OSError, trio.BrokenResourceError, ValueError, PostError) as exc:
            await self.aclose()
            if isinstance(exc, PostError):
                raise
            raise PostError(f"{type(exc).__name__}: {exc}") from exc

    async def _receive(self) -> bytes:
        assert self._wire is not None
        data = await self._wire.receive()
        if not data:
            raise PostError("connection closed before a complete answer")
        return data

    async def _answer(self) -> int:
        buffer = self._buffer
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            if len(buffer) > 65536:
                raise PostError("answer head too large")
            buffer += await self._receive()
        head, buffer = buffer[:end], buffer[end + 4 :]
        lines = head.split(b"\r\n")
        if not lines[0].startswith(b"HTTP/1.") or len(lines[0]) < 12:
            raise PostError(f"not an HTTP answer: {lines[0][:40]!r}")
        status = int(lines[0][9:12])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip().lower()
        close = headers.get(b"connection") == b"close" or lines[0].startswith(b"HTTP/1.0")
        if b"content-length" in headers:
            length = int(headers[b"content-length"])
            while len(buffer) < length:
                buffer += await self._receive()
            buffer = buffer[length:]
        elif headers.get(b"transfer-encoding") == b"chunked":
            buffer = await self._skip_chunks(buffer)
        elif status not in (204, 304) and not 100 <= status < 200:
            try:  # no length: the body ends with the connection
                while True:
                    await self._receive()
            except PostError:
                close = True
        if close:
            await self.aclose()
        else:
            self._buffer = buffer
        return status

    async def _skip_chunks(self, buffer: bytes) -> bytes:
        while True:
            while (end := buffer.find(b"\r\n")) < 0:
                buffer += await self._receive()
            size = int(buffer[:end].split(b";", 1)[0], 16)
            buffer = buffer[end + 2 :]
            if size == 0:
                return await self._skip_trailers(buffer)
            while len(buffer) < size + 2:
                buffer += await self._receive()
            buffer = buffer[size + 2 :]

    async def _skip_trailers(self, buffer: bytes) -> bytes:
        while True:  # trailer lines, then an empty line
            while (end := buffer.find(b"\r\n")) < 0:
                buffer += await self._receive()
            line, buffer = buffer[:end], buffer[end + 2 :]
            if not line:
                return buffer

    async def aclose(self) -> None:
        stream, self._stream, self._wire = self._stream, None, None
        if stream is not None:
            await trio.aclose_forcefully(stream)
