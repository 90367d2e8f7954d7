"""How deeply a JSON body nests, checked before it is decoded.

msgspec decodes nested arrays and objects recursively: a body nested a thousand
levels deep raises RecursionError, and one a few hundred deep decodes but then
breaks whatever walks it (rendering a template, storing jsonb). No request this
API takes needs more than a handful of levels, so anything deeper than
MAX_DEPTH is refused at the door, naming the field.

The common case costs a few C-level passes over the body (about 15 ms for 1 MB
of contacts); only a body that is too deep is walked token by token to name
where, and only its first 256 KB.
"""

from __future__ import annotations

import re

import msgspec

MAX_DEPTH = 32

_STRUCTURE = b'"[]{}'
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in _STRUCTURE)
# Naming the field walks the body token by token (about 3 µs a token): only this
# much of it, so that a huge body cannot hold the event loop.
_SCAN_BYTES = 256 * 1024
# Arrays and objects count alike: `(` opens, `)` closes.
_UNIFY = bytes.maketrans(b"[]{}", b"()()")
# A JSON string (escapes included), or one structural character.
_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{},:]')


def too_deep(body: bytes, limit: int = MAX_DEPTH) -> str | None:
    """None when `body` nests at most `limit` arrays/objects deep (or is not JSON at
    all: the decoder says so). Else the path of the field where it goes deeper:
    its first two steps (`messageContent.components`, `contacts[3]`), or "" for the
    body itself."""
    if _within(body, limit):
        return None
    steps = _steps_to_depth(body[:_SCAN_BYTES], limit)
    if steps is None:
        # Deeper beyond the part scanned (named as the body), or not JSON at all.
        return "" if len(body) > _SCAN_BYTES else None
    if not steps or isinstance(steps[0], int):
        return ""
    path = ""
    for step in steps[:2]:
        path += f"[{step}]" if isinstance(step, int) else (f".{step}" if path else step)
    return path


def _within(body: bytes, limit: int) -> bool:
    """Certainly no deeper than `limit` (False: maybe deeper; look closer)."""
    # Drop escaped backslashes and quotes, keep only quotes and brackets, drop what
    # is between quotes (string contents): what is left is the bracket structure.
    # Each pass removes the innermost pairs: valid JSON is empty after `depth` passes.
    structure = body.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    brackets = b"".join(structure.split(b'"')[::2]).translate(_UNIFY)
    for _ in range(limit):
        shorter = brackets.replace(b"()", b"")
        if len(shorter) == len(brackets):
            # Nothing left to pair: what remains is `)))(((`; only unclosed openers
            # beyond the limit could nest too deeply before the decoder gives up.
            return shorter.count(b"(") <= limit
        brackets = shorter
    return not brackets


def _steps_to_depth(body: bytes, limit: int) -> list[str | int] | None:
    """The keys and indices leading to the first array or object opened beyond
    `limit`, or None if there is none."""
    openers: list[bytes] = []  # the containers the scan is in, outermost first
    steps: list[str | int] = []  # where in each of them: the current key or index
    expect_key = False
    for match in _TOKEN.finditer(body):
        token = match.group()
        first = token[:1]
        if first == b'"':
            if expect_key and steps:
                steps[-1] = _key(token)
                expect_key = False
        elif first in b"[{":
            if len(openers) >= limit:
                return steps
            openers.append(first)
            steps.append(0 if first == b"[" else "")
            expect_key = first == b"{"
        elif first in b"]}":
            if openers:
                openers.pop()
                steps.pop()
            expect_key = False
        elif first == b"," and openers:
            index = steps[-1]
            if isinstance(index, int):
                steps[-1] = index + 1
            else:
                expect_key = True
    return None


def _key(token: bytes) -> str:
    try:
        key = msgspec.json.decode(token)
    except msgspec.DecodeError:
        return token[1:-1].decode("utf-8", "replace")
    return key if isinstance(key, str) else str(key)
