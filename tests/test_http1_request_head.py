"""The request-head reader of the webhook listener and the simulator
(engine/core/http1_request_head.py): which heads it reads by hand, that it reads them
exactly as h11 does, and what it gives from h11's reading of the others."""

from __future__ import annotations

import re

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.http1_request_head import HeadReader, ReceivedHead

SIGNATURE = b"x-hub-signature-256"  # what the listener asks for
AUTHORIZATION = b"authorization"  # what the simulator asks for
READER = HeadReader({SIGNATURE, AUTHORIZATION})


def h11_head(head: bytes) -> ReceivedHead | None:
    """How h11 reads `head` (without its final empty line); None if it refuses it."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(head + b"\r\n\r\n")
    try:
        event = conn.next_event()
    except h11.RemoteProtocolError:
        return None
    assert isinstance(event, h11.Request)
    return READER.from_h11(event)


def assert_read_alike(head: bytes) -> None:
    plain = READER.parse_plain(head)
    if plain is not None:
        reference = h11_head(head)
        assert reference is not None, f"h11 refuses what parse_plain accepted: {head!r}"
        # The size is the head's exact length by hand, h11's parts added up from h11.
        assert plain._replace(size=0) == reference._replace(size=0), head
        assert plain.size == len(head)


# The rules one line at a time, as the listener's and the simulator's own parsers applied
# them before they became one (a single regex now validates the whole head): the reader
# must accept exactly the heads these accept.
_REQUEST_LINE = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+ [\x21-\x7e]+ HTTP/1\.1")
_NAME = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(rb"[\x21-\x7e\x80-\xff]+(?:[ \t]+[\x21-\x7e\x80-\xff]+)*")


def plain_by_the_rules(head: bytes) -> bool:
    lines = head.split(b"\r\n")
    if _REQUEST_LINE.fullmatch(lines[0]) is None:
        return False
    lengths = hosts = 0
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or _NAME.fullmatch(name) is None:
            return False
        value = value.strip(b" \t")
        if value and _VALUE.fullmatch(value) is None:
            return False
        name = name.lower()
        if name == b"content-length":
            lengths += 1
            if lengths > 1 or not value.isdigit() or len(value) > 18:
                return False
        elif name == b"host":
            hosts += 1
        elif name == b"connection" and value.lower() not in (b"close", b"keep-alive"):
            return False
        elif name in (b"transfer-encoding", b"expect", b"upgrade", b"te", b"trailer"):
            return False
    return hosts == 1


WEBHOOK = (
    b"POST /webhooks/whatsapp HTTP/1.1\r\nhost: example.com\r\ncontent-type: application/json\r\n"
    b"x-hub-signature-256: sha256=abc\r\ncontent-length: 12"
)
SEND = (
    b"POST /v21.0/1/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer abc\r\nContent-Length: 12"
)


@pytest.mark.parametrize(
    ("head", "length", "keep_alive", "headers"),
    [
        (WEBHOOK, 12, True, {SIGNATURE: b"sha256=abc"}),
        (SEND, 12, True, {AUTHORIZATION: b"Bearer abc"}),
        (WEBHOOK + b"\r\nConnection: close", 12, False, {SIGNATURE: b"sha256=abc"}),
        (WEBHOOK + b"\r\nconnection: Keep-Alive", 12, True, {SIGNATURE: b"sha256=abc"}),
        (WEBHOOK + b"\r\nX-Hub-Signature-256: second", 12, True, {SIGNATURE: b"sha256=abc"}),
        (
            b"POST /a HTTP/1.1\r\nhost: x\r\nauthorization: Basic t\r\nauthorization: Bearer u",
            0,
            True,
            {AUTHORIZATION: b"Basic t"},
        ),
        (
            b"POST /a HTTP/1.1\r\nhost: x\r\nConnection:  keep-alive \r\nauthorization:bearer  t ",
            0,
            True,
            {AUTHORIZATION: b"bearer  t"},
        ),
        (
            b"PUT /a HTTP/1.1\r\nhost: x\r\nauthorization: Bearer \r\nx-empty:",
            0,
            True,
            {AUTHORIZATION: b"Bearer"},
        ),
        (b"POST /a HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-length: 0", 0, False, {}),
        (b"POST /a HTTP/1.1\r\nhost: x\r\ncontent-length: 000000000000000012", 12, True, {}),
        (b"GET /simulator/stats?x=1 HTTP/1.1\r\nhost: x", 0, True, {}),
        (b"GET * HTTP/1.1\r\nhost:", 0, True, {}),
        (WEBHOOK + b"\r\nx-empty:", 12, True, {SIGNATURE: b"sha256=abc"}),
        (WEBHOOK + b"\r\nx-tab:\tv\t", 12, True, {SIGNATURE: b"sha256=abc"}),
        (WEBHOOK + b"\r\nx-utf8: \xc3\xa9", 12, True, {SIGNATURE: b"sha256=abc"}),
    ],
    ids=[
        "webhook",
        "send",
        "connection-close",
        "connection-keep-alive",
        "first-signature-counts",
        "first-authorization-counts",
        "ows-stripped",
        "empty-bearer",
        "zero-length",
        "18-digit-length",
        "no-length",
        "empty-host",
        "empty-value",
        "tabs",
        "obs-text",
    ],
)
def test_plain_heads_are_read_by_hand_exactly_as_h11_reads_them(
    head: bytes, length: int, keep_alive: bool, headers: dict[bytes, bytes]
) -> None:
    plain = READER.parse_plain(head)
    assert plain is not None
    assert (plain.content_length, plain.keep_alive, plain.chunked) == (length, keep_alive, False)
    assert plain.headers == headers
    assert plain_by_the_rules(head)
    assert_read_alike(head)


@pytest.mark.parametrize(
    "head",
    [
        WEBHOOK + b"\r\ntransfer-encoding: chunked",
        WEBHOOK + b"\r\nTransfer-Encoding: identity",
        WEBHOOK + b"\r\nexpect: 100-continue",
        WEBHOOK + b"\r\nupgrade: h2c\r\nconnection: upgrade",
        WEBHOOK + b"\r\nTE: trailers",
        WEBHOOK + b"\r\ntrailer: x-checksum",
        WEBHOOK + b"\r\nconnection: close, te",
        WEBHOOK + b"\r\nconnection: keep-alive, upgrade",
        WEBHOOK + b"\r\nconnection: upgrade",
        WEBHOOK + b"\r\ncontent-length: 12",
        WEBHOOK.replace(b"12", b"12, 12"),
        WEBHOOK.replace(b"12", b"+12"),
        WEBHOOK.replace(b"12", b"\xd9\xa1"),  # an Arabic-Indic digit
        WEBHOOK.replace(b"12", b"1" * 19),
        WEBHOOK.replace(b"12", b""),
        WEBHOOK.replace(b"HTTP/1.1", b"HTTP/1.0"),
        WEBHOOK.replace(b"HTTP/1.1", b"http/1.1"),
        WEBHOOK.replace(b"POST", b"P@ST"),
        WEBHOOK.replace(b"/webhooks", b"/\xffwebhooks"),
        WEBHOOK.replace(b"POST /", b"POST  /"),
        WEBHOOK.replace(b"host: example.com\r\n", b""),
        WEBHOOK + b"\r\nHost: again",
        WEBHOOK + b"\r\n folded continuation",
        WEBHOOK + b"\r\nbad name: v",
        WEBHOOK.replace(b"host:", b"host :"),
        WEBHOOK + b"\r\nno colon",
        WEBHOOK + b"\r\nx-nul: a\x00b",
        WEBHOOK + b"\r\nx-ctl: a\x01b",
        WEBHOOK + b"\r\nx-del: a\x7fb",
        WEBHOOK + b"\r\nx-cr: a\rb",
        WEBHOOK + b"\nx-bare-lf: v",
        b"\r\n" + WEBHOOK,
        b"",
    ],
    ids=[
        "chunked",
        "transfer-encoding",
        "expect",
        "upgrade",
        "te",
        "trailer",
        "connection-close-te",
        "connection-keep-alive-upgrade",
        "connection-upgrade",
        "two-lengths",
        "length-list",
        "length-sign",
        "length-not-ascii",
        "length-19-digits",
        "length-empty",
        "http-1.0",
        "lower-case-version",
        "method-not-token",
        "target-not-ascii",
        "two-spaces",
        "no-host",
        "two-hosts",
        "obs-fold",
        "name-not-token",
        "space-before-colon",
        "no-colon",
        "nul",
        "control",
        "del",
        "bare-cr",
        "bare-lf",
        "leading-crlf",
        "empty",
    ],
)
def test_other_heads_are_left_to_h11(head: bytes) -> None:
    assert READER.parse_plain(head) is None
    assert not plain_by_the_rules(head)


@pytest.mark.parametrize(
    ("head", "length", "keep_alive", "chunked", "headers"),
    [
        (b"GET /healthz HTTP/1.0", 0, False, False, {}),
        (b"GET / HTTP/1.0\r\nconnection: keep-alive", 0, False, False, {}),
        (b"POST / HTTP/1.1\r\nhost: a\r\nConnection: keep-alive, Close", 0, False, False, {}),
        (b"POST / HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: x", 0, True, False, {}),
        (b"POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked", 0, True, True, {}),
        (
            b"POST / HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\ncontent-length: 5\r\n"
            b"X-Hub-Signature-256: one\r\nx-hub-signature-256: two\r\nAuthorization: Bearer t",
            5,
            True,
            False,
            {SIGNATURE: b"one", AUTHORIZATION: b"Bearer t"},
        ),
    ],
    ids=["http-1.0", "http-1.0-keep-alive", "close-in-a-list", "upgrade", "chunked", "wanted"],
)
def test_from_h11_gives_the_same_facts_by_h11s_rules(
    head: bytes, length: int, keep_alive: bool, chunked: bool, headers: dict[bytes, bytes]
) -> None:
    assert READER.parse_plain(head) is None
    read = h11_head(head)
    assert read is not None
    assert (read.content_length, read.keep_alive, read.chunked) == (length, keep_alive, chunked)
    assert read.headers == headers


def test_a_reader_gives_only_the_headers_it_was_built_for() -> None:
    head = WEBHOOK + b"\r\nAuthorization: Bearer t"
    signed = HeadReader({SIGNATURE}).parse_plain(head)
    authorized = HeadReader({AUTHORIZATION}).parse_plain(head)
    bare = HeadReader(set()).parse_plain(head)
    assert signed is not None and signed.headers == {SIGNATURE: b"sha256=abc"}
    assert authorized is not None and authorized.headers == {AUTHORIZATION: b"Bearer t"}
    assert bare is not None and bare.headers == {}
    assert signed._replace(headers={}) == authorized._replace(headers={}) == bare


@pytest.mark.parametrize(
    "name", [b"Authorization", b"bad name", b"", b"content-length", b"host", b"connection", b"te"]
)
def test_a_reader_wants_lower_case_names_it_does_not_read_itself(name: bytes) -> None:
    with pytest.raises(ValueError):
        HeadReader({name})


_NAMES = st.sampled_from(
    [b"content-type", b"Content-Length", b"content-length", b"connection", b"Connection",
     b"x-hub-signature-256", b"X-Hub-Signature-256", b"authorization", b"Authorization",
     b"user-agent", b"x-a", b"transfer-encoding", b"expect", b"te", b"TE", b"trailer",
     b"upgrade", b"host", b"Host", b"bad name", b"", b"content-length "]
)  # fmt: skip
_VALUES = st.one_of(
    st.sampled_from(
        [b"12", b"0", b"007", b"1" * 18, b"1" * 19, b"close", b"keep-alive", b"Close",
         b"chunked", b"sha256=ab", b"Bearer t", b"bearer ", b"1,2", b"", b"a b", b" padded ",
         b"\xc3\xa9"]
    ),
    st.binary(max_size=6),
)  # fmt: skip
_SEPARATORS = st.sampled_from([b"\r\n"] * 30 + [b"\n", b"\r", b"\r\n "])
_COLONS = st.sampled_from([b": "] * 10 + [b":", b" : ", b":\t", b""])


@given(
    method=st.sampled_from([b"POST"] * 6 + [b"GET", b"PUT", b"P@ST", b""]),
    target=st.sampled_from([b"/webhooks/whatsapp"] * 6 + [b"/a?b=c", b"*", b"/\xff", b"/ x"]),
    version=st.sampled_from([b"HTTP/1.1"] * 8 + [b"HTTP/1.0", b"HTTP/2", b"http/1.1"]),
    headers=st.lists(st.tuples(_NAMES, _COLONS, _VALUES, _SEPARATORS), max_size=6),
    host_at=st.integers(min_value=0, max_value=6),
    hosts=st.sampled_from([1] * 8 + [0, 2]),
)
@settings(max_examples=800, deadline=None)
def test_whatever_the_rules_accept_is_read_by_hand_and_as_h11_reads_it(
    method: bytes,
    target: bytes,
    version: bytes,
    headers: list[tuple[bytes, bytes, bytes, bytes]],
    host_at: int,
    hosts: int,
) -> None:
    lines = [(b"host", b": ", b"example.com", b"\r\n")] * hosts
    headers = headers[:host_at] + lines + headers[host_at:]
    head = method + b" " + target + b" " + version
    for name, colon, value, separator in headers:
        head += separator + name + colon + value
    # Only the part before the first empty line is a head.
    head = head.split(b"\r\n\r\n")[0]
    assert (READER.parse_plain(head) is not None) is plain_by_the_rules(head), head
    assert_read_alike(head)
