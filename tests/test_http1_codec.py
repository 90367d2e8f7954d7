"""engine.core.http1_codec: request heads out, responses in, fed whole and in pieces."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.http1_codec import BodyTooLarge, ProtocolError, RequestHead, ResponseReader

OK_HEAD = b"HTTP/1.1 200 OK\r\n"


def read(
    *pieces: bytes,
    eof: bool = False,
    head_request: bool = False,
    max_body_bytes: int = 1 << 20,
    max_head_bytes: int = 64 * 1024,
) -> ResponseReader:
    """Feed `pieces` one at a time; the reader must be complete at the end."""
    reader = ResponseReader(max_body_bytes=max_body_bytes, max_head_bytes=max_head_bytes)
    reader.start(head_request=head_request)
    done = False
    for piece in pieces:
        assert not done, "complete before the last piece"
        done = reader.feed(piece)
    if eof:
        assert not done
        done = reader.feed_eof()
    assert done
    return reader


def whole(data: bytes) -> list[bytes]:
    return [data]


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


# The same response must parse the same whether it arrives in one read or a byte per read.
WHOLE_OR_BYTEWISE = pytest.mark.parametrize(
    "split", [pytest.param(whole, id="whole"), pytest.param(bytewise, id="byte-by-byte")]
)


def refused(
    *pieces: bytes,
    error: type[Exception] = ProtocolError,
    match: str | None = None,
    max_body_bytes: int = 1 << 20,
    max_head_bytes: int = 64 * 1024,
) -> pytest.ExceptionInfo[Exception]:
    """Feed `pieces` to a fresh reader: all but the last are taken (incomplete), the last
    raises `error`."""
    reader = ResponseReader(max_body_bytes=max_body_bytes, max_head_bytes=max_head_bytes)
    reader.start()
    *accepted, last = pieces
    for piece in accepted:
        assert not reader.feed(piece)
    with pytest.raises(error, match=match) as raised:
        reader.feed(last)
    return raised


def content_lengths(lengths: list[bytes]) -> bytes:
    """One Content-Length header line per value."""
    return b"".join(b"Content-Length: %s\r\n" % length for length in lengths)


# --- requests


def test_request_head_is_built_once_and_each_request_adds_its_length_and_body() -> None:
    head = RequestHead(
        "POST", "/v21.0/PN/messages", b"graph.example", [(b"authorization", b"Bearer t")]
    )
    assert head.encode(b"{}") == (
        b"POST /v21.0/PN/messages HTTP/1.1\r\nHost: graph.example\r\n"
        b"authorization: Bearer t\r\nContent-Length: 2\r\n\r\n{}"
    )
    assert head.encode(b"").endswith(b"Content-Length: 0\r\n\r\n")


def test_a_get_without_body_has_no_content_length() -> None:
    assert RequestHead("GET", "/x?a=1", b"h:8080").encode() == (
        b"GET /x?a=1 HTTP/1.1\r\nHost: h:8080\r\n\r\n"
    )


@pytest.mark.parametrize(
    ("method", "target", "headers"),
    [
        pytest.param("PO ST", "/", [], id="space in method"),
        pytest.param("POST", "/a b", [], id="space in target"),
        pytest.param("POST", "/\u00e9", [], id="non-ASCII target"),
        pytest.param("POST", "", [], id="empty target"),
        pytest.param("POST", "/", [(b"x", b"a\r\nInjected: 1")], id="CRLF in value"),
        pytest.param("POST", "/", [(b"x", b"a\nb")], id="LF in value"),
        pytest.param("POST", "/", [(b"x", b"a\x00")], id="NUL in value"),
        pytest.param("POST", "/", [(b"x", b"trailing ")], id="trailing space in value"),
        pytest.param("POST", "/", [(b"bad name", b"v")], id="space in name"),
        pytest.param("POST", "/", [(b"", b"v")], id="empty name"),
        pytest.param("POST", "/", [(b"Content-Length", b"1")], id="own Content-Length"),
        pytest.param("POST", "/", [(b"host", b"other")], id="own Host"),
        pytest.param("POST", "/", [(b"transfer-encoding", b"chunked")], id="own Transfer-Encoding"),
    ],
)
def test_a_request_head_that_would_be_invalid_or_framed_twice_is_refused(
    method: str, target: str, headers: list[tuple[bytes, bytes]]
) -> None:
    with pytest.raises(ValueError):
        RequestHead(method, target, b"h", headers)


# --- responses: framing


@WHOLE_OR_BYTEWISE
def test_content_length_body(split: Callable[[bytes], list[bytes]]) -> None:
    data = OK_HEAD + b"Content-Type: application/json\r\nContent-Length: 5\r\n\r\nhello"
    reader = read(*split(data))
    assert (reader.status, reader.body, reader.reusable) == (200, b"hello", True)
    assert reader.headers == [(b"content-type", b"application/json"), (b"content-length", b"5")]


def test_header_names_are_case_insensitive_and_values_trimmed() -> None:
    reader = read(b"HTTP/1.1 201 Created\r\nCONTENT-length:  \t3 \r\nX-A:b\r\n\r\nabc")
    assert (reader.status, reader.body) == (201, b"abc")
    assert reader.headers == [(b"content-length", b"3"), (b"x-a", b"b")]


def test_a_status_line_without_reason_is_accepted() -> None:
    assert read(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n").status == 200


@WHOLE_OR_BYTEWISE
def test_chunked_body_with_extensions_and_trailers(split: Callable[[bytes], list[bytes]]) -> None:
    data = (
        OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
        b"3;name=value\r\nabc\r\n"
        b'A ; quoted="x;y"\r\n0123456789\r\n'
        b"0\r\nExpires: never\r\nX-Checksum: 1\r\n\r\n"
    )
    reader = read(*split(data))
    assert (reader.body, reader.reusable) == (b"abc0123456789", True)


def test_transfer_encoding_is_case_insensitive() -> None:
    reader = read(OK_HEAD + b"Transfer-Encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
    assert reader.body == b"ok"


def test_a_body_without_length_ends_with_the_connection_which_is_not_reused() -> None:
    reader = read(OK_HEAD + b"\r\nsome ", b"bytes", eof=True)
    assert (reader.body, reader.reusable, reader.complete) == (b"some bytes", False, True)


@pytest.mark.parametrize(
    "lengths",
    [
        pytest.param([b"5, 5"], id="one header, 5, 5"),
        pytest.param([b"5,5"], id="one header, 5,5"),
        pytest.param([b"5", b"5"], id="two headers"),
    ],
)
def test_identical_repeated_content_lengths_are_one(lengths: list[bytes]) -> None:
    assert read(OK_HEAD + content_lengths(lengths) + b"\r\nhello").body == b"hello"


@pytest.mark.parametrize(
    "lengths",
    [
        pytest.param([b"5", b"6"], id="two headers differ"),
        pytest.param([b"5, 6"], id="one header, values differ"),
        pytest.param([b"-1"], id="negative"),
        pytest.param([b"+5"], id="plus sign"),
        pytest.param([b"0x10"], id="hex"),
        pytest.param([b"1.0"], id="decimal point"),
        pytest.param([b""], id="empty"),
        pytest.param([b"5,"], id="empty element"),
        pytest.param([b"1 2"], id="inner space"),
        pytest.param([b"9" * 40], id="40 digits"),
    ],
)
def test_invalid_or_conflicting_content_length_is_an_error(lengths: list[bytes]) -> None:
    refused(OK_HEAD + content_lengths(lengths) + b"\r\nhello")


@pytest.mark.parametrize(
    "headers",
    [
        b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: gzip\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    ],
)
def test_transfer_encoding_with_content_length_or_other_codings_is_an_error(
    headers: bytes,
) -> None:
    refused(OK_HEAD + headers + b"\r\n5\r\nhello\r\n0\r\n\r\n")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"zz\r\nab\r\n0\r\n\r\n", id="not hex"),
        pytest.param(b"\r\nab\r\n0\r\n\r\n", id="no size"),
        pytest.param(b"-2\r\nab\r\n0\r\n\r\n", id="negative size"),
        pytest.param(b"2\r\nabXY0\r\n\r\n", id="data not followed by CRLF"),
        pytest.param(b"11111111111111111\r\n", id="17 hex digits"),
        pytest.param(b"2;\x00\r\nab\r\n0\r\n\r\n", id="control character in an extension"),
        pytest.param(b"2\r\nab\r\n0\r\nno colon\r\n\r\n", id="malformed trailer"),
        pytest.param(b"2" + b" " * 5000 + b"\r\n", id="endless size line"),
    ],
)
def test_malformed_chunked_bodies_are_errors(body: bytes) -> None:
    refused(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + body)


@WHOLE_OR_BYTEWISE
def test_interim_responses_are_skipped(split: Callable[[bytes], list[bytes]]) -> None:
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n"
        + OK_HEAD
        + b"Content-Length: 2\r\n\r\nok"
    )
    reader = read(*split(data))
    assert (reader.status, reader.body, reader.reusable) == (200, b"ok", True)
    assert reader.headers == [(b"content-length", b"2")]


def test_101_switching_protocols_is_an_error() -> None:
    refused(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n", match="101")


@pytest.mark.parametrize(
    ("data", "head_request"),
    [
        pytest.param(OK_HEAD + b"Content-Length: 10\r\n\r\n", True, id="HEAD request"),
        pytest.param(b"HTTP/1.1 204 No Content\r\n\r\n", False, id="204"),
        pytest.param(b"HTTP/1.1 304 Not Modified\r\n\r\n", False, id="304"),
        pytest.param(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
            False,
            id="304 with the length of what it did not send",
        ),
    ],
)
def test_answers_that_have_no_body(data: bytes, head_request: bool) -> None:
    reader = read(data, head_request=head_request)
    assert (reader.body, reader.reusable) == (b"", True)


@pytest.mark.parametrize(
    ("head", "reusable"),
    [
        (OK_HEAD + b"Connection: close\r\n", False),
        (OK_HEAD + b"Connection: keep-alive, CLOSE\r\n", False),
        (OK_HEAD + b"Connection: keep-alive\r\n", True),
        (b"HTTP/1.0 200 OK\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n", True),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\n", False),
    ],
)
def test_whether_the_connection_may_be_reused(head: bytes, reusable: bool) -> None:
    reader = read(head + b"Content-Length: 2\r\n\r\nok")
    assert (reader.body, reader.reusable) == (b"ok", reusable)


@pytest.mark.parametrize(
    ("response", "body"),
    [
        pytest.param(OK_HEAD + b"Content-Length: 2\r\n\r\nok", b"ok", id="content-length"),
        pytest.param(
            OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            b"ok",
            id="chunked",
        ),
        pytest.param(b"HTTP/1.1 204 No Content\r\n\r\n", b"", id="204"),
    ],
)
@pytest.mark.parametrize(
    "extra", [pytest.param(OK_HEAD, id="a head"), pytest.param(b"x", id="one byte")]
)
def test_bytes_after_a_complete_response_forbid_reuse(
    response: bytes, body: bytes, extra: bytes
) -> None:
    assert read(response).reusable is True  # without the extra bytes
    reader = read(response + extra)
    assert (reader.body, reader.reusable) == (body, False)


# --- responses: malformed heads and truncation


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/2 200 OK\r\n",
        b"HTTP/1.1 20 OK\r\n",
        b"HTTP/1.1 2000 OK\r\n",
        b"HTTP/1.1 099 Low\r\n",
        b"ICY 200 OK\r\n",
        b"http/1.1 200 OK\r\n",
        b"HTTP/1.1 200 O\x00K\r\n",
        OK_HEAD + b"X-A: 1\r\n folded\r\n",  # obs-fold
        OK_HEAD + b"X-A: 1\r\n\tfolded\r\n",
        OK_HEAD + b"X-A : 1\r\n",  # space before the colon
        OK_HEAD + b"no colon\r\n",
        OK_HEAD + b": no name\r\n",
        OK_HEAD + b"X-A: a\rb\r\n",  # bare CR
        OK_HEAD + b"X-A: a\nb\r\n",  # bare LF
        OK_HEAD + b"X-A: \x7f\r\n",
        b"\r\n" + OK_HEAD,
    ],
)
def test_malformed_heads_are_errors(head: bytes) -> None:
    refused(head + b"Content-Length: 0\r\n\r\n")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"HTTP/1.1 200 OK\r\nContent-Le",
        OK_HEAD + b"Content-Length: 5\r\n\r\nhel",
        OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhel",
        OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: 1\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
    ],
)
def test_a_close_before_the_end_of_the_response_is_an_error(data: bytes) -> None:
    reader = ResponseReader()
    reader.start()
    assert not reader.feed(data)
    with pytest.raises(ProtocolError):
        reader.feed_eof()


FILLER = b"X-Filler: " + b"a" * 50 + b"\r\n"
# Enough filler lines after OK_HEAD that the last one crosses 1024 bytes, not one more.
FILLERS_TO_CROSS_1024 = (1024 - len(OK_HEAD)) // len(FILLER) + 1


@pytest.mark.parametrize(
    "pieces",
    [
        pytest.param([OK_HEAD, *[FILLER] * FILLERS_TO_CROSS_1024], id="unterminated, line by line"),
        pytest.param([OK_HEAD + b"X: " + b"a" * 1024 + b"\r\n\r\n"], id="terminated"),
        pytest.param([b"HTTP/1.1 100 Continue\r\n\r\n" * 100], id="interim heads count"),
    ],
)
def test_a_head_larger_than_the_limit_is_an_error(pieces: list[bytes]) -> None:
    refused(*pieces, match="larger than 1024", max_head_bytes=1024)


def test_a_head_at_the_limit_is_accepted() -> None:
    head = OK_HEAD + b"Content-Length: 0\r\n\r\n"
    filler = b"X: " + b"a" * (1024 - len(head) - 5) + b"\r\n"
    assert read(OK_HEAD + filler + b"Content-Length: 0\r\n\r\n", max_head_bytes=1024).status == 200


ACCEPTED_HEAD = b"HTTP/1.1 202 Accepted\r\n"
CHUNKED_HEAD = ACCEPTED_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"


@pytest.mark.parametrize(
    "pieces",
    [
        pytest.param(
            [ACCEPTED_HEAD + b"Content-Length: 11\r\n\r\n"],
            id="content-length, before reading the body",
        ),
        pytest.param(
            [CHUNKED_HEAD + b"6\r\nabcdef\r\n", b"5\r\n"],
            id="chunked, on the size line before its data",
        ),
        pytest.param([ACCEPTED_HEAD + b"\r\n" + b"x" * 10, b"y"], id="until close"),
    ],
)
def test_a_body_above_the_limit_is_refused(pieces: list[bytes]) -> None:
    too_large = refused(*pieces, error=BodyTooLarge, max_body_bytes=10).value
    assert isinstance(too_large, BodyTooLarge) and too_large.status == 202


@pytest.mark.parametrize(
    ("data", "eof"),
    [
        pytest.param(
            ACCEPTED_HEAD + b"Content-Length: 10\r\n\r\n" + b"x" * 10, False, id="content-length"
        ),
        pytest.param(CHUNKED_HEAD + b"6\r\nxxxxxx\r\n4\r\nxxxx\r\n0\r\n\r\n", False, id="chunked"),
        pytest.param(ACCEPTED_HEAD + b"\r\n" + b"x" * 10, True, id="until close"),
    ],
)
def test_a_body_at_the_limit_is_accepted(data: bytes, eof: bool) -> None:
    assert read(data, eof=eof, max_body_bytes=10).body == b"x" * 10


def test_the_reader_serves_successive_responses_after_start() -> None:
    reader = ResponseReader()
    for body in (b"one", b"two"):
        reader.start()
        assert not reader.received_any
        assert reader.feed(OK_HEAD + b"Content-Length: 3\r\n\r\n" + body)
        assert reader.received_any
        assert reader.body == body
    with pytest.raises(RuntimeError):
        reader.feed(b"more")


# --- round trip against random splits

_name = st.text("abcdefghijklmnopqrstuvwxyz-", min_size=1, max_size=12).map(str.encode)
_value = st.binary(max_size=30).map(
    lambda raw: bytes(b if 0x20 <= b < 0x7F else 0x61 for b in raw).strip(b" ")
)
_extra_headers = st.lists(
    st.tuples(_name, _value).filter(
        lambda h: h[0] not in (b"content-length", b"transfer-encoding", b"connection")
    ),
    max_size=5,
)


@st.composite
def _responses(draw: st.DrawFn) -> tuple[bytes, int, bytes, bool, list[int]]:
    status = draw(st.sampled_from([200, 201, 400, 404, 429, 500, 503]))
    body = draw(st.binary(max_size=300))
    headers = draw(_extra_headers)
    framing = draw(st.sampled_from(["length", "chunked", "close"]))
    interim = draw(st.integers(0, 2))
    data = b"HTTP/1.1 100 Continue\r\n\r\n" * interim
    data += b"HTTP/1.1 %d Reason Phrase\r\n" % status
    data += b"".join(b"%s: %s\r\n" % header for header in headers)
    if framing == "length":
        data += b"Content-Length: %d\r\n\r\n" % len(body) + body
    elif framing == "chunked":
        data += b"Transfer-Encoding: chunked\r\n\r\n"
        cuts = sorted(draw(st.lists(st.integers(0, len(body)), max_size=4)))
        edges = [0, *cuts, len(body)]
        for start, end in itertools.pairwise(edges):
            if end > start:
                data += b"%x;ext=1\r\n%s\r\n" % (end - start, body[start:end])
        data += b"0\r\nTrailer-Field: x\r\n\r\n"
    else:
        data += b"\r\n" + body
    splits = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    return data, status, body, framing == "close", splits


@settings(max_examples=300, deadline=None)
@given(_responses())
def test_any_split_of_a_response_parses_like_the_whole(
    case: tuple[bytes, int, bytes, bool, list[int]],
) -> None:
    data, status, body, until_close, splits = case
    edges = [0, *splits, len(data)]
    pieces = [data[a:b] for a, b in itertools.pairwise(edges) if b > a]
    reader = ResponseReader()
    reader.start()
    done = False
    for index, piece in enumerate(pieces):
        done = reader.feed(memoryview(piece))
        if done:
            assert index == len(pieces) - 1
    if until_close:
        assert not done and reader.feed_eof()
    else:
        assert done
    assert (reader.status, reader.body, reader.reusable) == (status, body, not until_close)


_VALID = [
    OK_HEAD + b"Content-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
    OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 204 No Content\r\n\r\n",
    OK_HEAD + b"\r\nuntil close",
]


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(_VALID),
    st.lists(st.tuples(st.integers(0, 200), st.binary(min_size=0, max_size=3)), max_size=4),
    st.lists(st.integers(1, 40), max_size=6),
)
def test_corrupted_responses_fail_only_with_protocol_errors(
    valid: bytes, edits: list[tuple[int, bytes]], splits: list[int]
) -> None:
    """Whatever the bytes, the reader completes, waits, or raises ProtocolError/BodyTooLarge."""
    data = bytearray(valid)
    for position, replacement in edits:
        position = min(position, len(data))
        data[position : position + len(replacement)] = replacement
    reader = ResponseReader(max_body_bytes=64, max_head_bytes=256)
    reader.start()
    offset = 0
    try:
        for size in [*splits, len(data)]:
            piece, offset = bytes(data[offset : offset + size]), offset + size
            if reader.feed(piece):
                break
        else:
            reader.feed_eof()
    except (ProtocolError, BodyTooLarge):
        return
    assert reader.complete and 100 <= reader.status <= 999 and len(reader.body) <= 64
