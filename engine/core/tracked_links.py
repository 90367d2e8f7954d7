"""Tracked links: the URLs of a text message become `{base}/l/{code}`, one per recipient and URL.

A code is derived, never stored, so sending writes nothing more: it is the
base64url of (recipient id, URL index) as two varints and a keyed BLAKE2b tag
over them, under the database's callback key (engine/store/secrets.py) with its
own personalisation, so a code is no callback reference and none can be forged
or guessed (96-bit tag). The campaign keeps its URLs, in order of first
appearance (`campaigns.tracked_urls`); a click names one by its index.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence

_TAG_BYTES = 12  # 96 bits, as engine/core/callback_reference.py
_PERSON = b"ce-link"
_MAX_ID = 2**63 - 1  # recipient ids are PostgreSQL bigints
_MAX_VARINT_BYTES = 10
# The longest code: two 10-byte varints and the tag, base64url without padding.
MAX_CODE_CHARS = -(-(2 * _MAX_VARINT_BYTES + _TAG_BYTES) * 4 // 3)
# Meta's limit on a text body.
MAX_TEXT_BODY = 4096

# http(s) URLs up to whitespace; braces end one too, so a `{{placeholder}}` next to a
# URL stays a placeholder. Trailing punctuation ("see https://x.com.") is prose.
_URL = re.compile(r"https?://[^\s{}<>\"']+", re.IGNORECASE)
_TRAILING = ".,;:!?)]"


def extract_urls(text: str) -> list[str]:
    """The distinct URLs of a message text, in order of first appearance."""
    seen: dict[str, None] = {}
    for match in _URL.finditer(text):
        url = match.group(0).rstrip(_TRAILING)
        if len(url) > len("https://"):
            seen.setdefault(url, None)
    return list(seen)


def link_prefix(base_url: str) -> str:
    return base_url.rstrip("/") + "/l/"


def longest_rewritten(text: str, urls: Sequence[str], base_url: str) -> int:
    """The length of `text` once every URL is a tracked link of the longest code."""
    link = len(link_prefix(base_url)) + MAX_CODE_CHARS
    pattern = _alternation(urls)
    if pattern is None:
        return len(text)
    return len(pattern.sub(lambda _: "x" * link, text))


def _alternation(urls: Sequence[str]) -> re.Pattern[str] | None:
    if not urls:
        return None
    # Longest first: "https://a.com/x" must win over its prefix "https://a.com".
    return re.compile("|".join(re.escape(u) for u in sorted(urls, key=len, reverse=True)))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _read_varint(data: bytes, start: int) -> tuple[int, int] | None:
    value = shift = 0
    for position in range(start, min(len(data), start + _MAX_VARINT_BYTES)):
        byte = data[position]
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, position + 1
    return None


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class LinkCodes:
    """Issues and verifies link codes under one key."""

    def __init__(self, key: bytes) -> None:
        if not 16 <= len(key) <= 64:
            raise ValueError("a link key has 16 to 64 bytes")
        # Keyed once: copying the keyed state costs less than keying each tag.
        self._mac = hashlib.blake2b(digest_size=_TAG_BYTES, key=key, person=_PERSON)

    def issue(self, recipient_id: int, url_index: int) -> str:
        body = _varint(recipient_id) + _varint(url_index)
        return _encode(body + self._tag(body))

    def parse(self, code: str) -> tuple[int, int] | None:
        """(recipient id, URL index) of a code we issued; None for anything else."""
        if not 0 < len(code) <= MAX_CODE_CHARS or not code.isascii():
            return None
        try:
            raw = base64.urlsafe_b64decode(code + "=" * (-len(code) % 4))
        except (binascii.Error, ValueError):
            return None
        # The last character's spare bits must be zero: one link, one code.
        if len(raw) <= _TAG_BYTES or _encode(raw) != code:
            return None
        body, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
        if not hmac.compare_digest(self._tag(body), tag):
            return None
        first = _read_varint(body, 0)
        second = first and _read_varint(body, first[1])
        if not first or not second or second[1] != len(body) or first[0] > _MAX_ID:
            return None
        return first[0], second[0]

    def _tag(self, body: bytes) -> bytes:
        mac = self._mac.copy()
        mac.update(body)
        return mac.digest()


class LinkRewriter:
    """A campaign's rewriting, prepared once: per message, one scan and a join."""

    def __init__(self, codes: LinkCodes, urls: Sequence[str], base_url: str) -> None:
        self._codes = codes
        self._index = {url: i for i, url in enumerate(urls)}
        self._pattern = _alternation(urls)
        self._prefix = link_prefix(base_url)

    def rewrite(self, text: str, recipient_id: int) -> str:
        """`text` with each of the campaign's URLs replaced by this recipient's link."""
        if self._pattern is None:
            return text
        links: dict[str, str] = {}

        def link(match: re.Match[str]) -> str:
            url = match.group(0)
            found = links.get(url)
            if found is None:
                code = self._codes.issue(recipient_id, self._index[url])
                found = links[url] = self._prefix + code
            return found

        return self._pattern.sub(link, text)


def overflow(text: str, base_url: str) -> str | None:
    """Why `text` cannot track its links within Meta's body limit, or None."""
    longest = longest_rewritten(text, extract_urls(text), base_url)
    if longest > MAX_TEXT_BODY:
        return (
            f"with tracked links it may reach {longest} characters;"
            f" expected at most {MAX_TEXT_BODY}"
        )
    return None
