"""The bytes of an HTTP/1.1 client exchange, with no I/O: request heads out, responses in.

`engine/transport/http1.py` writes and reads the sockets; this module only turns
requests into bytes and received bytes into a response. It replaces h11 on the send
path because h11's generality (events, a state machine per side, validation of every
header we send) costs several times the rest of a request's CPU, and the requests
we send are all alike: the head of a route is built and validated once
(`RequestHead`), each request only appends its Content-Length and body.

The reader (`ResponseReader`) is fed whatever the socket returned, however split,
and must hold against any answer: the Cloud API URL is a tenant's setting, so the
server may be anything. It follows RFC 9112 for what a client needs:

- status line `HTTP/1.x NNN reason`; header names are tokens, matched
  case-insensitively (given lowercased); obs-fold and control characters are
  rejected;
- the body is framed by `Transfer-Encoding: chunked` (chunk extensions and
  trailers accepted and ignored), else by `Content-Length` (one valid value,
  repeated identically at most), else by the close of the connection (which is
  then not reused); both TE and CL, or any other transfer coding, is an error;
- 1xx interim responses are skipped (101 is an error: we never ask to switch);
  answers to HEAD and 204/304 answers have no body;
- `Connection: close`, HTTP/1.0 without `keep-alive`, a close-delimited body, or
  bytes after the response all mean the connection must not carry another request;
- the head (interim heads included) is at most `max_head_bytes`, the body at most
  `max_body_bytes` (`BodyTooLarge`, raised as soon as a length says so).

Anything else is a `ProtocolError`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

Header = tuple[bytes, bytes]

MAX_HEAD_BYTES = 64 * 1024
# A chunk-size line is a hex number and extensions we ignore: nothing legitimate is long.
_MAX_CHUNK_LINE_BYTES = 4096
# 16 hex digits or 18 decimal ones: more than any body we accept, bounded so int() stays cheap.
_MAX_HEX_DIGITS = 16
_MAX_DECIMAL_DIGITS = 18

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_TOKEN_RE = re.compile(_TOKEN)
# Field values: visible characters, obs-text, space and tab; no CR, LF, NUL or other control.
_VALUE_RE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
# One regex validates a whole response head (status line and every field line, each
# ending in CRLF): names are tokens with no space before the colon, so an obs-fold line
# (starting with a space or tab) or a line without a colon fails here.
_HEAD_RE = re.compile(
    rb"HTTP/1\.([0-9]) ([0-9]{3})(?: [\t\x20-\x7e\x80-\xff]*)?\r\n"
    rb"(?:" + _TOKEN + rb":[\t\x20-\x7e\x80-\xff]*\r\n)*"
)
_DIGITS_RE = re.compile(rb"[0-9]{1,%d}" % _MAX_DECIMAL_DIGITS)
_HEX_RE = re.compile(rb"[0-9A-Fa-f]{1,%d}" % _MAX_HEX_DIGITS)
# After the size: optional `;name[=value]` extensions, which we accept and ignore.
_CHUNK_EXT_RE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_OWS = b" \t"
_TARGET_RE = re.compile(rb"[\x21-\x7e]+")

_FRAMING_HEADERS = frozenset({b"content-length", b"transfer-encoding", b"connection"})
# Headers the writer adds itself: a caller's copy would frame the request twice.
_RESERVED_REQUEST_HEADERS = frozenset({b"host", b"content-length", b"transfer-encoding"})


class ProtocolError(ValueError):
    """The bytes received are not a valid HTTP/1.1 response (or not a complete one)."""


class BodyTooLarge(Exception):
    """The body exceeds `max_body_bytes`; `status` is the response's."""

    def __init__(self, status: int, limit: int) -> None:
        super().__init__(f"answer larger than {limit} bytes")
        self.status = status
        self.limit = limit


class RequestHead:
    """The validated head of every request of one route, minus its Content-Length.

    `encode(body)` is the whole request, ready for one send.
    """

    __slots__ = ("_with_length", "_without_length", "sends_length")

    def __init__(
        self, method: str, target: str, host: bytes, headers: Sequence[Header] = ()
    ) -> None:
        raw_method, raw_target = _ascii(method), _ascii(target)
        if not _TOKEN_RE.fullmatch(raw_method):
            raise ValueError(f"invalid method {method!r}")
        if not _TARGET_RE.fullmatch(raw_target):
            raise ValueError(f"invalid request target {target!r}")
        if not _TARGET_RE.fullmatch(host):
            raise ValueError(f"invalid host {host!r}")
        lines = [b"%s %s HTTP/1.1\r\nHost: %s\r\n" % (raw_method, raw_target, host)]
        for name, value in headers:
            if not _TOKEN_RE.fullmatch(name):
                raise ValueError(f"invalid header name {name!r}")
            if name.lower() in _RESERVED_REQUEST_HEADERS:
                raise ValueError(f"{name!r} is added by the writer")
            if not _VALUE_RE.fullmatch(value) or value != value.strip(_OWS):
                raise ValueError(f"invalid value for header {name!r}")
            lines.append(b"%s: %s\r\n" % (name, value))
        head = b"".join(lines)
        self._without_length = head + b"\r\n"
        self._with_length = head + b"Content-Length: "
        # A request with a body, or whose method has one, says how long it is (0 too).
        self.sends_length = method in ("POST", "PUT", "PATCH")

    def encode(self, body: bytes = b"") -> bytes:
        if body or self.sends_length:
            return b"%s%d\r\n\r\n%s" % (self._with_length, len(body), body)
        return self._without_length


# Reader states.
_HEAD, _LENGTH, _CHUNK_SIZE, _CHUNK_DATA, _CHUNK_END, _TRAILERS, _UNTIL_CLOSE, _DONE = range(8)


class ResponseReader:
    """Parses one response at a time from the bytes of a connection.

    `start(head_request)` before each response, then `feed(data)` with each read
    until it returns True (complete), or `feed_eof()` when the peer closed. After
    completion: `status`, `headers`, `body` and `reusable` (the connection may carry
    the next request).
    """

    def __init__(
        self, *, max_body_bytes: int = 1 << 20, max_head_bytes: int = MAX_HEAD_BYTES
    ) -> None:
        self._max_body = max_body_bytes
        self._max_head = max_head_bytes
        self._buffer = bytearray()
        self._state = _DONE
        self._head_request = False
        self._scanned = 0  # bytes of _buffer already searched for the end of the head
        self._head_bytes = 0  # head bytes consumed so far, interim responses included
        self._remaining = 0  # of a Content-Length body or the current chunk
        self._received = 0  # body bytes so far
        self._chunks: list[bytes] = []
        self.received_any = False
        self.status = 0
        self.headers: list[Header] = []
        self.body = b""
        self.reusable = False
        self._keep_alive = False

    def start(self, *, head_request: bool = False) -> None:
        """Expect a new response (to a HEAD request when `head_request`)."""
        self._buffer.clear()
        self._state = _HEAD
        self._head_request = head_request
        self._scanned = self._head_bytes = self._remaining = self._received = 0
        self._chunks = []
        self.received_any = False
        self.status = 0
        self.headers = []
        self.body = b""
        self.reusable = False

    @property
    def complete(self) -> bool:
        return self._state == _DONE

    def feed(self, data: bytes | bytearray | memoryview) -> bool:
        """Add received bytes; True once the response is complete."""
        if self._state == _DONE:
            raise RuntimeError("feed() after the response was complete: call start()")
        if not data:
            return False
        self.received_any = True
        self._buffer += data
        return self._advance()

    def feed_eof(self) -> bool:
        """The peer closed the connection; True if that completed the response."""
        if self._state == _UNTIL_CLOSE:
            self._finish_body(b"".join(self._chunks))
            self._state = _DONE
            self.reusable = False
            return True
        if self._state == _DONE:
            return True
        what = "the head" if self._state == _HEAD else "the body"
        raise ProtocolError(f"connection closed before the end of {what}")

    # Each step consumes what it can from the front of _buffer and returns False when
    # it needs more bytes.

    def _advance(self) -> bool:
        while True:
            state = self._state
            if state == _HEAD:
                if not self._read_head():
                    return False
            elif state == _LENGTH:
                return self._read_length_body()
            elif state == _UNTIL_CLOSE:
                self._take_until_close()
                return False
            elif state == _CHUNK_SIZE:
                if not self._read_chunk_size():
                    return False
            elif state == _CHUNK_DATA:
                if not self._read_chunk_data():
                    return False
            elif state == _CHUNK_END:
                if not self._read_chunk_end():
                    return False
            elif state == _TRAILERS:
                if not self._read_trailers():
                    return False
            else:
                return self._finished()

    def _read_head(self) -> bool:
        buffer = self._buffer
        end = buffer.find(b"\r\n\r\n", self._scanned)
        if end < 0:
            if self._head_bytes + len(buffer) > self._max_head:
                raise ProtocolError(f"response head larger than {self._max_head} bytes")
            self._scanned = max(0, len(buffer) - 3)
            return False
        size = end + 4
        self._head_bytes += size
        if self._head_bytes > self._max_head:
            raise ProtocolError(f"response head larger than {self._max_head} bytes")
        head = bytes(buffer[: end + 2])
        del buffer[:size]
        self._scanned = 0
        match = _HEAD_RE.fullmatch(head)
        if match is None:
            raise ProtocolError(f"malformed response head: {head[:80]!r}")
        status = int(match[2])
        if status < 100:
            raise ProtocolError(f"invalid status {status}")
        if status < 200:
            if status == 101:
                raise ProtocolError("101 Switching Protocols, which was never asked for")
            return True  # an interim response: the real one follows (state stays _HEAD)
        headers = []
        framing = []  # the few headers that decide framing and reuse, seen once more below
        for line in head.split(b"\r\n")[1:-1]:
            name, _, value = line.partition(b":")
            header = (name.lower(), value.strip(_OWS))
            headers.append(header)
            if header[0] in _FRAMING_HEADERS:
                framing.append(header)
        self.status = status
        self.headers = headers
        self._frame(framing, http_10=match[1] == b"0")
        return True

    def _frame(self, framing: list[Header], *, http_10: bool) -> None:
        """Choose how the body ends, and whether the connection may be reused."""
        lengths: list[bytes] = []
        codings: list[bytes] = []
        connection: list[bytes] = []
        for name, value in framing:
            if name == b"content-length":
                # Every element counts, empty ones too: "Content-Length:" is invalid.
                lengths.extend(item.strip(_OWS) for item in value.split(b","))
            elif name == b"transfer-encoding":
                codings.extend(item.lower() for item in _list_items(value))
            elif name == b"connection":
                connection.extend(item.lower() for item in _list_items(value))
        if http_10:
            self._keep_alive = b"keep-alive" in connection and b"close" not in connection
        else:
            self._keep_alive = b"close" not in connection
        length = -1
        if lengths:
            if codings:
                # RFC 9112 §6.1: a server must not send both; a proxy between could
                # disagree about where this body ends.
                raise ProtocolError("both Transfer-Encoding and Content-Length")
            if any(item != lengths[0] for item in lengths):
                raise ProtocolError(f"conflicting Content-Length values {lengths!r}")
            if not _DIGITS_RE.fullmatch(lengths[0]):
                raise ProtocolError(f"invalid Content-Length {lengths[0][:40]!r}")
            length = int(lengths[0])
        elif codings and codings != [b"chunked"]:
            raise ProtocolError(f"unsupported Transfer-Encoding {codings!r}")
        if self._head_request or self.status in (204, 304):
            self._state = _DONE
        elif codings:
            self._state = _CHUNK_SIZE
        elif length >= 0:
            if length > self._max_body:
                raise BodyTooLarge(self.status, self._max_body)
            self._remaining = length
            self._state = _LENGTH
        else:
            self._keep_alive = False  # the close is the end of the body
            self._state = _UNTIL_CLOSE

    def _read_length_body(self) -> bool:
        buffer = self._buffer
        if len(buffer) < self._remaining:
            return False
        remaining = self._remaining
        self._finish_body(bytes(buffer[:remaining]))
        del buffer[:remaining]
        self._state = _DONE
        return self._finished()

    def _take_until_close(self) -> None:
        buffer = self._buffer
        self._received += len(buffer)
        if self._received > self._max_body:
            raise BodyTooLarge(self.status, self._max_body)
        if buffer:
            self._chunks.append(bytes(buffer))
            buffer.clear()

    def _read_chunk_size(self) -> bool:
        buffer = self._buffer
        end = buffer.find(b"\r\n")
        if end < 0:
            if len(buffer) > _MAX_CHUNK_LINE_BYTES:
                raise ProtocolError("chunk size line too long")
            return False
        if end > _MAX_CHUNK_LINE_BYTES:
            raise ProtocolError("chunk size line too long")
        line = bytes(buffer[:end])
        del buffer[: end + 2]
        size_text, _, extensions = line.partition(b";")
        size_text = size_text.rstrip(_OWS)  # BWS before an extension
        if not _HEX_RE.fullmatch(size_text) or not _CHUNK_EXT_RE.fullmatch(extensions):
            raise ProtocolError(f"invalid chunk size line {line[:40]!r}")
        size = int(size_text, 16)
        if size == 0:
            self._state = _TRAILERS
            return True
        self._received += size
        if self._received > self._max_body:
            raise BodyTooLarge(self.status, self._max_body)
        self._remaining = size
        self._state = _CHUNK_DATA
        return True

    def _read_chunk_data(self) -> bool:
        buffer = self._buffer
        if not buffer:
            return False
        take = min(self._remaining, len(buffer))
        self._chunks.append(bytes(buffer[:take]))
        del buffer[:take]
        self._remaining -= take
        if self._remaining:
            return False
        self._state = _CHUNK_END
        return True

    def _read_chunk_end(self) -> bool:
        buffer = self._buffer
        if len(buffer) < 2:
            if buffer and buffer[0:1] != b"\r":
                raise ProtocolError("chunk data not followed by CRLF")
            return False
        if buffer[:2] != b"\r\n":
            raise ProtocolError("chunk data not followed by CRLF")
        del buffer[:2]
        self._state = _CHUNK_SIZE
        return True

    def _read_trailers(self) -> bool:
        """Trailer fields are skipped (validated like header lines); an empty line ends them."""
        buffer = self._buffer
        while True:
            end = buffer.find(b"\r\n")
            if end < 0:
                if self._head_bytes + len(buffer) > self._max_head:
                    raise ProtocolError(f"trailers larger than {self._max_head} bytes")
                return False
            self._head_bytes += end + 2
            if self._head_bytes > self._max_head:
                raise ProtocolError(f"trailers larger than {self._max_head} bytes")
            line = bytes(buffer[:end])
            del buffer[: end + 2]
            if not line:
                self._finish_body(b"".join(self._chunks))
                self._state = _DONE
                return True
            name, colon, value = line.partition(b":")
            if not colon or not _TOKEN_RE.fullmatch(name) or not _VALUE_RE.fullmatch(value):
                raise ProtocolError(f"malformed trailer line {line[:40]!r}")

    def _finish_body(self, body: bytes) -> None:
        self.body = body
        self._chunks = []

    def _finished(self) -> bool:
        # Bytes after a complete response were never asked for (we send one request at a
        # time): whatever they are, the connection's framing can no longer be trusted.
        self.reusable = self._keep_alive and not self._buffer
        self._buffer.clear()
        return True


def _ascii(text: str) -> bytes:
    try:
        return text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"not ASCII: {text!r}") from None


def _list_items(value: bytes) -> list[bytes]:
    """The elements of a comma-separated header value, empty elements dropped."""
    if b"," not in value:
        return [value] if value else []
    return [item for item in (part.strip(_OWS) for part in value.split(b",")) if item]
