"""Which A/B variant a recipient gets: a pure function of the campaign, the contact
and the weights. Pure.

Each (campaign, contact) pair hashes to a point in [0, 2**52): the first 13 hex
digits of the MD5 of `"<campaign id>:<contact id>"`. Cut points split that range
in proportion to the weights, so the shares converge to the weights, and the
same contact always gets the same variant of the same campaign (another
campaign shuffles them anew). PostgreSQL computes the same point when it
freezes the recipients (engine/store/recipients.py), with the cut points this
module gives: integers, so the two never disagree by a rounding.

With a sample (`abTest.sampleShare`) only points below the sample's cut are
split, in the same proportions, and the others wait for the winner.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Sequence
from fractions import Fraction

POINT_BITS = 52  # exact in a double, and 13 hex digits
POINTS = 1 << POINT_BITS


def point_of(campaign_id: str, contact_id: str) -> int:
    """The contact's point in [0, POINTS) for this campaign (ids as canonical text)."""
    digest = hashlib.md5(f"{campaign_id}:{contact_id}".encode(), usedforsecurity=False)
    return int(digest.hexdigest()[: POINT_BITS // 4], 16)


def sample_cut(sample_share: float | None) -> int:
    """Points below this are in the sample; without a sample, every point."""
    if sample_share is None:
        return POINTS
    if not 0 < sample_share < 1:
        raise ValueError("sample_share must be between 0 and 1")
    return int(Fraction(sample_share) * POINTS)


def cut_points(weights: Sequence[float], span: int = POINTS) -> list[int]:
    """The lower bound of each variant's range in [0, span): the first is 0, and
    variant i owns [cut[i], cut[i + 1]). Exact (fractions), so SQL can use them."""
    if len(weights) < 1 or any(not w > 0 for w in weights):
        raise ValueError("weights must be positive")
    exact = [Fraction(w) for w in weights]
    total = sum(exact)
    cuts, running = [], Fraction(0)
    for weight in exact:
        cuts.append(int(running * span / total))
        running += weight
    return cuts


def variant_at(point: int, cuts: Sequence[int], sample_end: int = POINTS) -> int | None:
    """The variant a point falls in; None when it is outside the sample."""
    if point >= sample_end:
        return None
    return bisect_right(cuts, point) - 1


def variant_of(
    campaign_id: str,
    contact_id: str,
    weights: Sequence[float],
    sample_share: float | None = None,
) -> int | None:
    """The index of the contact's variant (None: not in the sample, it gets the winner)."""
    end = sample_cut(sample_share)
    return variant_at(point_of(campaign_id, contact_id), cut_points(weights, end), end)
