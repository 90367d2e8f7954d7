"""What the simulator needs from a request head, read by hand or by h11.

The simulator shares a 2-core machine with the daemon it benchmarks, and h11
parsing every head and writing every answer cost most of its ~0.45 ms per
message. `parse_plain` reads only the plain shape the daemon sends (request
line `METHOD target HTTP/1.1`, `name: value` lines, CRLF endings, at most one
Content-Length, no Transfer-Encoding, Expect or Upgrade) in one pass and
returns None for everything else, which h11 reads as before: h11 stays the
reference parser, as for the daemon's webhook listener
(api/webhooks/request_head.py). tests/test_simulator_server.py checks both
read the heads `parse_plain` accepts alike.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import h11

# RFC 9110 tokens, visible ASCII (request target), and a field value after OWS is
# stripped: stricter than h11 where they differ, never looser.
_REQUEST_LINE = re.compile(rb"([-!#$%&'*+.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/1\.1")
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(rb"[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*")
_MAX_LENGTH_DIGITS = 18
# Headers that change how a request is framed or answered: h11 handles those.
_TO_H11 = frozenset({b"transfer-encoding", b"expect", b"upgrade", b"te", b"trailer"})


class RequestHead(NamedTuple):
    method: bytes
    target: bytes
    content_length: int
    keep_alive: bool  # HTTP/1.1 and no `Connection: close`
    authorized: bool  # an `Authorization: Bearer <non-empty>` header


def _bearer(value: bytes) -> bool:
    return value[:7].lower() == b"bearer " and bool(value[7:].strip())


def parse_plain(head: bytes) -> RequestHead | None:
    """A head (without its final empty line) of the plain shape, or None."""
    lines = head.split(b"\r\n")
    request_line = _REQUEST_LINE.fullmatch(lines[0])
    if request_line is None:
        return None
    length: int | None = None
    hosts = 0
    keep_alive = True
    authorized = False
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        # A bare CR or LF, an obs-folded line or a space before the colon fail here.
        if not colon or _TOKEN.fullmatch(name) is None:
            return None
        value = value.strip(b" \t")
        if value and _VALUE.fullmatch(value) is None:
            return None
        name = name.lower()
        if name == b"content-length":
            # bytes.isdigit() is ASCII only; one value, no list.
            if length is not None or not value.isdigit() or len(value) > _MAX_LENGTH_DIGITS:
                return None
            length = int(value)
        elif name == b"authorization":
            authorized = authorized or _bearer(value)
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
    if hosts != 1:
        return None  # h11 refuses a request without exactly one Host
    return RequestHead(request_line[1], request_line[2], length or 0, keep_alive, authorized)


def from_h11(request: h11.Request) -> RequestHead:
    """The same from a head h11 has parsed and validated, with h11's keep-alive rule.
    The content length is h11's business then (it reads the body): 0 here."""
    keep_alive = request.http_version >= b"1.1"
    authorized = False
    for name, value in request.headers:
        if name == b"authorization":
            authorized = authorized or _bearer(value)
        elif name == b"connection":
            tokens = [token.strip().lower() for token in value.split(b",")]
            keep_alive = keep_alive and b"close" not in tokens
    return RequestHead(request.method, request.target, 0, keep_alive, authorized)
