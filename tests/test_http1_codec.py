"""engine.core.http1_codec: request heads out, responses in, fed whole and in pieces."""

from __future__ import annotations

import itertools

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


def bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


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
        ("PO ST", "/", []),
        ("POST", "/a b", []),
        ("POST", "/\u00e9", []),
        ("POST", "", []),
        ("POST", "/", [(b"x", b"a\r\nInjected: 1")]),
        ("POST", "/", [(b"x", b"a\nb")]),
        ("POST", "/", [(b"x", b"a\x00")]),
        ("POST", "/", [(b"x", b"trailing ")]),
        ("POST", "/", [(b"bad name", b"v")]),
        ("POST", "/", [(b"", b"v")]),
        ("POST", "/", [(b"Content-Length", b"1")]),
        ("POST", "/", [(b"host", b"other")]),
        ("POST", "/", [(b"transfer-encoding", b"chunked")]),
    ],
)
def test_a_request_head_that_would_be_invalid_or_framed_twice_is_refused(
    method: str, target: str, headers: list[tuple[bytes, bytes]]
) -> None:
    with pytest.raises(ValueError):
        RequestHead(method, target, b"h", headers)


# --- responses: framing


def test_content_length_body_whole_and_byte_by_byte() -> None:
    data = OK_HEAD + b"Content-Type: application/json\r\nContent-Length: 5\r\n\r\nhello"
    for pieces in ([data], bytewise(data)):
        reader = read(*pieces)
        assert (reader.status, reader.body, reader.reusable) == (200, b"hello", True)
        assert reader.headers == [(b"content-type", b"application/json"), (b"content-length", b"5")]


def test_header_names_are_case_insensitive_and_values_trimmed() -> None:
    reader = read(b"HTTP/1.1 201 Created\r\nCONTENT-length:  \t3 \r\nX-A:b\r\n\r\nabc")
    assert (reader.status, reader.body) == (201, b"abc")
    assert reader.headers == [(b"content-length", b"3"), (b"x-a", b"b")]


def test_a_status_line_without_reason_is_accepted() -> None:
    assert read(b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n").status == 200


def test_chunked_body_with_extensions_and_trailers_byte_by_byte() -> None:
    data = (
        OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n"
        b"3;name=value\r\nabc\r\n"
        b'A ; quoted="x;y"\r\n0123456789\r\n'
        b"0\r\nExpires: never\r\nX-Checksum: 1\r\n\r\n"
    )
    for pieces in ([data], bytewise(data)):
        reader = read(*pieces)
        assert (reader.body, reader.reusable) == (b"abc0123456789", True)


def test_transfer_encoding_is_case_insensitive() -> None:
    reader = read(OK_HEAD + b"Transfer-Encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n")
    assert reader.body == b"ok"


def test_a_body_without_length_ends_with_the_connection_which_is_not_reused() -> None:
    reader = read(OK_HEAD + b"\r\nsome ", b"bytes", eof=True)
    assert (reader.body, reader.reusable, reader.complete) == (b"some bytes", False, True)


@pytest.mark.parametrize(
    "value",
    [b"5, 5", b"5,5"],
)
def test_identical_repeated_content_lengths_are_one(value: bytes) -> None:
    assert read(OK_HEAD + b"Content-Length: " + value + b"\r\n\r\nhello").body == b"hello"
    repeated = OK_HEAD + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello"
    assert read(repeated).body == b"hello"


@pytest.mark.parametrize(
    "lengths",
    [
        [b"5", b"6"],
        [b"5, 6"],
        [b"-1"],
        [b"+5"],
        [b"0x10"],
        [b"1.0"],
        [b""],
        [b"5,"],
        [b"1 2"],
        [b"9" * 40],
    ],
)
def test_invalid_or_conflicting_content_length_is_an_error(lengths: list[bytes]) -> None:
    head = OK_HEAD + b"".join(b"Content-Length: %s\r\n" % length for length in lengths)
    reader = ResponseReader()
    reader.start()
    with pytest.raises(ProtocolError):
        reader.feed(head + b"\r\nhello")


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
    reader = ResponseReader()
    reader.start()
    with pytest.raises(ProtocolError):
        reader.feed(OK_HEAD + headers + b"\r\n5\r\nhello\r\n0\r\n\r\n")


@pytest.mark.parametrize(
    "body",
    [
        b"zz\r\nab\r\n0\r\n\r\n",  # not hex
        b"\r\nab\r\n0\r\n\r\n",  # no size
        b"-2\r\nab\r\n0\r\n\r\n",
        b"2\r\nabXY0\r\n\r\n",  # data not followed by CRLF
        b"11111111111111111\r\n",  # 17 hex digits
        b"2;\x00\r\nab\r\n0\r\n\r\n",  # control character in an extension
        b"2\r\nab\r\n0\r\nno colon\r\n\r\n",  # malformed trailer
        b"2" + b" " * 5000 + b"\r\n",  # endless size line
    ],
)
def test_malformed_chunked_bodies_are_errors(body: bytes) -> None:
    reader = ResponseReader()
    reader.start()
    with pytest.raises(ProtocolError):
        reader.feed(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n" + body)


def test_interim_responses_are_skipped() -> None:
    data = (
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n"
        + OK_HEAD
        + b"Content-Length: 2\r\n\r\nok"
    )
    for pieces in ([data], bytewise(data)):
        reader = read(*pieces)
        assert (reader.status, reader.body, reader.reusable) == (200, b"ok", True)
        assert reader.headers == [(b"content-length", b"2")]


def test_101_switching_protocols_is_an_error() -> None:
    reader = ResponseReader()
    reader.start()
    with pytest.raises(ProtocolError, match="101"):
        reader.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n")


def test_a_head_request_and_204_and_304_answers_have_no_body() -> None:
    reader = read(OK_HEAD + b"Content-Length: 10\r\n\r\n", head_request=True)
    assert (reader.body, reader.reusable) == (b"", True)
    for status in (b"204 No Content", b"304 Not Modified"):
        reader = read(b"HTTP/1.1 " + status + b"\r\n\r\n")
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


def test_bytes_after_a_complete_response_forbid_reuse() -> None:
    data = OK_HEAD + b"Content-Length: 2\r\n\r\nok"
    reader = read(data + b"HTTP/1.1 200 OK\r\n")
    assert (reader.body, reader.reusable) == (b"ok", False)
    chunked = OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    assert read(chunked + b"x").reusable is False
    assert read(b"HTTP/1.1 204 No Content\r\n\r\nbody").reusable is False


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
    reader = ResponseReader()
    reader.start()
    with pytest.raises(ProtocolError):
        reader.feed(head + b"Content-Length: 0\r\n\r\n")


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


def test_a_head_larger_than_the_limit_is_an_error_even_unterminated() -> None:
    reader = ResponseReader(max_head_bytes=1024)
    reader.start()
    with pytest.raises(ProtocolError, match="larger than 1024"):
        for _ in range(100):
            reader.feed(b"X-Filler: " + b"a" * 50 + b"\r\n" if reader.received_any else OK_HEAD)
    with pytest.raises(ProtocolError, match="larger than 1024"):
        read(OK_HEAD + b"X: " + b"a" * 1024 + b"\r\n\r\n", max_head_bytes=1024)


def test_interim_heads_count_towards_the_head_limit() -> None:
    reader = ResponseReader(max_head_bytes=1024)
    reader.start()
    with pytest.raises(ProtocolError, match="larger than"):
        reader.feed(b"HTTP/1.1 100 Continue\r\n\r\n" * 100)


def test_a_head_at_the_limit_is_accepted() -> None:
    head = OK_HEAD + b"Content-Length: 0\r\n\r\n"
    filler = b"X: " + b"a" * (1024 - len(head) - 5) + b"\r\n"
    assert read(OK_HEAD + filler + b"Content-Length: 0\r\n\r\n", max_head_bytes=1024).status == 200


def test_a_content_length_above_the_limit_is_refused_before_reading_the_body() -> None:
    reader = ResponseReader(max_body_bytes=10)
    reader.start()
    with pytest.raises(BodyTooLarge) as refused:
        reader.feed(b"HTTP/1.1 202 Accepted\r\nContent-Length: 11\r\n\r\n")
    assert refused.value.status == 202
    assert read(OK_HEAD + b"Content-Length: 10\r\n\r\n" + b"x" * 10, max_body_bytes=10).body


def test_chunked_and_close_delimited_bodies_above_the_limit_are_refused() -> None:
    chunked = ResponseReader(max_body_bytes=10)
    chunked.start()
    chunked.feed(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n")
    with pytest.raises(BodyTooLarge):
        chunked.feed(b"5\r\n")  # refused on the size line, before its data
    until_close = ResponseReader(max_body_bytes=10)
    until_close.start()
    until_close.feed(OK_HEAD + b"\r\n" + b"x" * 10)
    with pytest.raises(BodyTooLarge):
        until_close.feed(b"y")


def test_the_reader_serves_successive_responses_after_start() -> None:
    reader = ResponseReader()
    for body in (b"one", b"two"):
        reader.start()
        assert reader.feed(OK_HEAD + b"Content-Length: 3\r\n\r\n" + body)
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
