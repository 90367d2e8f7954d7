"""The retarget audiences a user can ask for (docs/http-api.md, "Retarget").

One definition for the API's validation and the store's SQL
(engine/store/retarget.py says which recipients each one holds).
"""

from __future__ import annotations

from typing import Literal, get_args

Audience = Literal["not_delivered", "not_read", "not_replied", "failed"]
AUDIENCES: tuple[Audience, ...] = get_args(Audience)
