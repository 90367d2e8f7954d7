"""What an HTTP/1.1 server needs from a request head, read by hand when it is plain, from
h11's reading otherwise. One reader for the two servers that have one: the daemon's
webhook listener (api/webhook_listener.py) and the Cloud API simulator
(engine/tools/simulator/server.py).

h11 is the reference parser: `HeadReader.parse_plain` reads only the plain shape
webhooks and the daemon's requests have, accepts nothing h11 would read differently,
and returns None for everything else, which the caller hands to h11 and then reads
with `HeadReader.from_h11`. It exists for its cost: on a 600-byte signed webhook head
h11 spends ~40 µs (a fresh `h11.Connection` to a `Request`), this ~5 µs: one regex
validates the whole head, a second finds the few lines that matter (the line-by-line
parsers it replaced took ~11 µs).

The plain shape, exactly:

- the request line is `METHOD SP target SP HTTP/1.1`: the method a token, the target
  visible ASCII;
- then `name: value` lines ending in CRLF (no bare CR or LF, no obs-fold, no space
  before the colon): the name a token, the value visible characters (obs-text too),
  spaces and tabs, no control character; OWS around it is not part of it;
- at most one Content-Length, of 1 to 18 ASCII digits (no list, no sign);
- exactly one Host;
- Connection, if present, only `close` or `keep-alive` (`close` in any of them wins);
- no Transfer-Encoding, Expect, Upgrade, TE or Trailer: those change how a request
  is framed or answered, and h11 reads them.

Stricter than h11 where they differ, never looser. tests/test_http1_request_head.py
checks both readings agree on every head `parse_plain` accepts.

Besides the framing, a reader returns the first value of each header it was built to
look for (`HeadReader(wanted)`): the listener asks for `X-Hub-Signature-256`, the
simulator for `Authorization`, and each derives its own fact from that value. First
value: when a header is repeated, later copies are ignored. For the simulator that is
narrower than it was (it accepted a request if any of its Authorization headers was a
bearer; it now looks at the first one only, as the listener always did for its
signature). A sender must not repeat Authorization, which is no list (RFC 9110,
section 5.3), and the daemon sends one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Set
from typing import NamedTuple, Protocol

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_TOKEN_RE = re.compile(_TOKEN)
# The whole plain head in one match: the request line, then each field line. A field
# value's characters (OWS included) are visible ASCII, obs-text, space and tab: once its
# OWS is stripped that is RFC 9110's field-value with no control character. CR and LF
# are not among them, so a bare one, like an obs-fold (a line starting with a space)
# or a space before the colon, fails the match.
_PLAIN_HEAD = re.compile(
    rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/1\.1(?:\r\n" + _TOKEN + rb":[\t\x20-\x7e\x80-\xff]*)*"
)
_MAX_LENGTH_DIGITS = 18
# Headers that change how a request is framed or answered: h11 handles those.
_TO_H11 = frozenset({b"transfer-encoding", b"expect", b"upgrade", b"te", b"trailer"})
# The headers the reader itself interprets; a caller may not ask for them.
_FRAMING = frozenset({b"content-length", b"host", b"connection"}) | _TO_H11


class ReceivedHead(NamedTuple):
    method: bytes
    target: bytes
    content_length: int  # 0 when there is none
    keep_alive: bool  # HTTP/1.1 and no `Connection: close`
    chunked: bool  # Transfer-Encoding: chunked (only from h11, which then reads the body)
    size: int  # bytes of the head (about, from h11), for the caller's bound
    headers: dict[bytes, bytes]  # the first value of each wanted header present, OWS stripped


class H11Request(Protocol):
    """What `from_h11` reads of an `h11.Request` (engine.core does not import h11)."""

    @property
    def method(self) -> bytes: ...

    @property
    def target(self) -> bytes: ...

    @property
    def http_version(self) -> bytes: ...

    @property
    def headers(self) -> Iterable[tuple[bytes, bytes]]: ...


class HeadReader:
    """Reads request heads, and the first value of each header named in `wanted`
    (lower-case tokens, none of the framing headers the reader interprets itself)."""

    def __init__(self, wanted: Set[bytes]) -> None:
        for name in wanted:
            if _TOKEN_RE.fullmatch(name) is None or name != name.lower():
                raise ValueError(f"not a lower-case header name: {name!r}")
            if name in _FRAMING:
                raise ValueError(f"{name!r} is read by the reader itself")
        self.wanted = frozenset(wanted)
        # Only the lines that matter, found in one pass: in a head `_PLAIN_HEAD` matched,
        # CRLF begins each field line and a name ends at the colon, so a match is a whole
        # name (ASCII case-insensitive, as bytes.lower()) and its value up to the line end.
        names = b"|".join(re.escape(name) for name in sorted(_FRAMING | self.wanted))
        self._lines = re.compile(rb"\r\n(" + names + rb"):[ \t]*([^\r]*)", re.IGNORECASE).findall

    def parse_plain(self, head: bytes) -> ReceivedHead | None:
        """A head (without its final empty line) of the plain shape, or None."""
        request = _PLAIN_HEAD.fullmatch(head)
        if request is None:
            return None
        length: int | None = None
        hosts = 0
        keep_alive = True
        found: dict[bytes, bytes] = {}
        for name, value in self._lines(head):
            name = name.lower()
            value = value.rstrip(b" \t")  # the leading OWS is not captured
            if name == b"content-length":
                # bytes.isdigit() is ASCII only; one value, no list.
                if length is not None or not value.isdigit() or len(value) > _MAX_LENGTH_DIGITS:
                    return None
                length = int(value)
            elif name == b"host":
                hosts += 1
            elif name == b"connection":
                token = value.lower()
                if token == b"close":
                    keep_alive = False
                elif token != b"keep-alive":
                    return None
            elif name in _TO_H11:
                return None
            elif name not in found:
                found[name] = value
        if hosts != 1:
            return None  # h11 refuses a request without exactly one Host
        # Positional: keywords cost a quarter of a µs here.
        return ReceivedHead(
            request[1], request[2], length or 0, keep_alive, False, len(head), found
        )

    def from_h11(self, request: H11Request) -> ReceivedHead:
        """The same from a head h11 has parsed and validated (lower-case names, one
        Content-Length at most, Transfer-Encoding only "chunked"), with h11's keep-alive
        rule: HTTP/1.1 and no `close` token in any Connection header."""
        length = 0
        chunked = False
        keep_alive = request.http_version >= b"1.1"
        found: dict[bytes, bytes] = {}
        wanted = self.wanted
        size = len(request.target)
        for name, value in request.headers:
            size += len(name) + len(value)
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = True
            elif name == b"connection":
                tokens = [token.strip().lower() for token in value.split(b",")]
                keep_alive = keep_alive and b"close" not in tokens
            elif name in wanted and name not in found:
                found[name] = value
        return ReceivedHead(
            request.method, request.target, length, keep_alive, chunked, size, found
        )
