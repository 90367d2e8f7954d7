"""What an A/B variant's message must satisfy, and the tracked URLs of a campaign with
variants. Pure.

A variant's content is checked as the campaign's own is (engine/core/campaign_content.py):
when the campaign is created, and again when an edit changes what it renders with (its
message type, media, tracked links), so a stored variant always renders.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from engine.core import tracked_links
from engine.core.campaign_content import unrenderable


def variant_problem(
    message_type: str,
    content: Any,
    media_url: str | None,
    defaults: Mapping[str, str],
    *,
    track_links: bool,
    links_base_url: str | None,
) -> str | None:
    """Why a variant's `content` cannot be sent with the campaign's settings, or None."""
    reason = unrenderable(message_type, content, media_url, defaults)
    if reason is not None:
        return reason
    if track_links and links_base_url and isinstance(content, str):
        return tracked_links.overflow(content, links_base_url)
    return None


def with_variant_urls(
    urls: Sequence[str], track_links: bool, variants: Sequence[Mapping[str, Any]]
) -> list[str]:
    """The campaign text's tracked URLs, then those only its variants have: the link
    codes number them all, in this order."""
    tracked = list(urls)
    if track_links:
        for variant in variants:
            content = variant["messageContent"]
            if isinstance(content, str):
                tracked += [u for u in tracked_links.extract_urls(content) if u not in tracked]
    return tracked
