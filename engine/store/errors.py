"""What the store raises for a request it cannot carry out, and a shared SQL helper."""

from __future__ import annotations

from typing import Any


class InvalidReference(Exception):
    """A request names a row the caller does not own (or that does not exist)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class InUse(Exception):
    """A row other rows still depend on."""


class DuplicatePhone(Exception):
    """Another contact of the same owner has this phone number."""


class Unstorable(Exception):
    """A value PostgreSQL refuses to store (a NUL character in text, a number out of
    range, ...). The statement failed, so its transaction changed nothing."""


def set_clause(changes: dict[str, Any], allowed: frozenset[str], first: int) -> str:
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"not editable: {sorted(unknown)}")
    return ", ".join(f"{column} = ${first + i}" for i, column in enumerate(changes))


class NotFound(Exception):
    """No such row, or it belongs to someone else. `what` names the resource."""

    def __init__(self, key: str, what: str = "Campaign") -> None:
        super().__init__(key)
        self.key = key
        self.what = what


class DatabaseUnavailable(Exception):
    """PostgreSQL cannot be reached, or the connection broke during the operation
    (server restarted, session terminated, network gone).

    Nothing about the operation is known beyond what a lost commit acknowledgement
    leaves: a statement that was on the wire may or may not have taken effect.
    Callers retry the smallest unit of work with backoff; the daemon never stops for it.
    """
