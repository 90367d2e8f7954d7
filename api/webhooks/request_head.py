"""What the webhook listener needs from a request head, read either way.

h11 is the reference parser: every head it does not understand the way
`parse_simple` does goes through it. `parse_simple` reads only the plain shape
webhooks have (one request line, `name: value` lines, CRLF endings, one
Content-Length, no Transfer-Encoding, Expect or Upgrade), accepts nothing h11
would read differently, and returns None for everything else. It exists for
its cost: in the listener h11 spends ~70 µs on each request head, half the
daemon's budget per webhook; this spends ~10. tests/test_webhook_listener.py
checks that both read every head it accepts alike.
"""

from __future__ import annotations

import re
from typing import NamedTuple

import h11

# RFC 9110 tokens, visible ASCII (request target), and a field value after OWS is
# stripped: visible characters (obs-text too) with single spaces or tabs between.
# Stricter than h11 where they differ (no control characters), never looser.
_REQUEST_LINE = re.compile(rb"([-!#$%&'*+.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP/1\.1")
_TOKEN = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(rb"[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*")
_MAX_LENGTH_DIGITS = 18
# Headers that change how a request is framed or answered: h11 handles those.
_TO_H11 = frozenset({b"transfer-encoding", b"expect", b"upgrade", b"te", b"trailer"})


class RequestHead(NamedTuple):
    method: bytes
    target: bytes
    keep_alive: bool  # HTTP/1.1 and no `Connection: close`
    content_length: int
    chunked: bool  # Transfer-Encoding: chunked (then h11 reads the body)
    signature: bytes | None  # the first X-Hub-Signature-256
    size: int  # bytes of the head, for the listener's bound


def parse_simple(head: bytes) -> RequestHead | None:
    """A head (without its final empty line) of the plain shape, or None."""
    lines = head.split(b"\r\n")
    request_line = _REQUEST_LINE.fullmatch(lines[0])
    if request_line is None:
        return None
    length: int | None = None
    hosts = 0
    keep_alive = True
    signature: bytes | None = None
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
        elif name == b"host":
            hosts += 1
        elif name == b"connection":
            token = value.lower()
            if token == b"close":
                keep_alive = False
            elif token != b"keep-alive":
                return None
        elif name == b"x-hub-signature-256":
            if signature is None:
                signature = value
        elif name in _TO_H11:
            return None
    if hosts != 1:
        return None  # h11 refuses a request without one Host
    return RequestHead(
        method=request_line[1],
        target=request_line[2],
        keep_alive=keep_alive,
        content_length=length or 0,
        chunked=False,
        signature=signature,
        size=len(head),
    )


def from_h11(request: h11.Request) -> RequestHead:
    """The same, from a head h11 has parsed and validated (one Content-Length at most,
    Transfer-Encoding only "chunked"), with h11's keep-alive rule."""
    length = 0
    chunked = False
    keep_alive = request.http_version >= b"1.1"
    signature: bytes | None = None
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
        elif name == b"x-hub-signature-256" and signature is None:
            signature = value
    return RequestHead(request.method, request.target, keep_alive, length, chunked, signature, size)
