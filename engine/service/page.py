"""One page of a keyset-paginated list."""

from __future__ import annotations

from typing import Any

import msgspec


class Page(msgspec.Struct, frozen=True):
    """`items` as the API shows them; `last` is the keyset position of the last
    item (to continue after it), None when the page is empty. The position is the
    stored value, not its rendering: a time shown to the millisecond would skip
    rows created within the same millisecond."""

    items: list[dict[str, Any]]
    last: Any
