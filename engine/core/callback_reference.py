"""The reference the engine puts in `biz_opaque_callback_data`: `<recipient id>.<tag>`.

WhatsApp echoes the value in every status of the message, and it is what
resolves a send in doubt (no wamid was stored). The tag is a keyed BLAKE2b MAC
(RFC 7693; three times cheaper than HMAC-SHA256 for inputs this short, and it
is computed on every send and every status) of the id under a per-database key
(engine/store/secrets.py), so a reference cannot be guessed from a row number,
another deployment sharing the Meta app never accepts ours, and other
software's values never match.
"""

from __future__ import annotations

import hashlib
import hmac

_TAG_BYTES = 12  # 96 bits: guessing one takes ~2**95 tries
_TAG_HEX_CHARS = 2 * _TAG_BYTES
_PERSON = b"ce-recipient"  # domain separation, should the key ever serve another purpose
_MAX_RECIPIENT_ID = 2**63 - 1  # recipient ids are PostgreSQL bigints
_MAX_ID_DIGITS = len(str(_MAX_RECIPIENT_ID))


class CallbackReferences:
    """Issues and verifies references under one key."""

    def __init__(self, key: bytes) -> None:
        if not 16 <= len(key) <= 64:
            raise ValueError("a callback reference key has 16 to 64 bytes")
        self._key = key

    def issue(self, recipient_id: int) -> str:
        return f"{recipient_id}.{self._tag(str(recipient_id))}"

    def recipient_id(self, reference: str | None) -> int | None:
        """The recipient a reference we issued names; None for anything else."""
        if reference is None:
            return None
        digits, dot, tag = reference.partition(".")
        if (
            not dot
            or len(tag) != _TAG_HEX_CHARS
            or not 0 < len(digits) <= _MAX_ID_DIGITS
            # isdigit() alone accepts "²" and other Unicode digits.
            or not (digits.isascii() and digits.isdigit())
            or not tag.isascii()
        ):
            return None
        if not hmac.compare_digest(self._tag(digits), tag):
            return None
        recipient_id = int(digits)
        # A tag we computed over a non-canonical id ("007") was never issued.
        if str(recipient_id) != digits or recipient_id > _MAX_RECIPIENT_ID:
            return None
        return recipient_id

    def _tag(self, digits: str) -> str:
        mac = hashlib.blake2b(
            digits.encode("ascii"), digest_size=_TAG_BYTES, key=self._key, person=_PERSON
        )
        return mac.hexdigest()
