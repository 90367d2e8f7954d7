"""What a campaign may store as its message: content the renderer can always turn
into a Cloud API body. Pure.

The check runs when a campaign is created or edited, with no variables (each
placeholder renders empty or as its default), so that a stored campaign never
fails while it is being sent, after its recipients were marked `sending`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from engine.core.rendering import render_payload

# Far more than any Cloud API body needs; deep enough that rendering (which
# copies the content per recipient) stays well within Python's recursion limit.
MAX_DEPTH = 32


def unrenderable(
    message_type: str, content: Any, media_url: str | None, defaults: Mapping[str, str]
) -> str | None:
    """Why `content` cannot be sent as a `message_type` message, or None if it can."""
    if _depth(content) > MAX_DEPTH:
        return f"nested deeper than {MAX_DEPTH} levels"
    try:
        payload = render_payload(message_type, content, {}, defaults, media_url=media_url)
        msgspec.json.encode(payload)
    except (ValueError, TypeError, OverflowError) as error:
        return str(error)
    return None


def _depth(value: Any) -> int:
    """How many arrays/objects deep `value` nests, counted without recursion."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        pending.extend((child, depth + 1) for child in children)
    return deepest
