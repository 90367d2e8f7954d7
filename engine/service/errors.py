"""What the engine's interface raises for a request it refuses. Callers (the HTTP
API) turn each into an answer; none of them needs to know the store.

Field names are the request's (camelCase, as the HTTP API takes them), so a
message can name the field a caller sent.
"""

from __future__ import annotations

from engine.core.lifecycle import TransitionRefused
from engine.store.errors import (
    DatabaseUnavailable,
    DuplicatePhone,
    InUse,
    InvalidReference,
    NotFound,
    Unstorable,
)


class InvalidInput(Exception):
    """A value the engine will not accept: `field: rule`."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule
        self.message = f"{field}: {rule}"


__all__ = [
    "DatabaseUnavailable",
    "DuplicatePhone",
    "InUse",
    "InvalidInput",
    "InvalidReference",
    "NotFound",
    "TransitionRefused",
    "Unstorable",
]
