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


def set_clause(changes: dict[str, Any], allowed: frozenset[str], first: int) -> str:
    unknown = set(changes) - allowed
    if unknown:
        raise ValueError(f"not editable: {sorted(unknown)}")
    return ", ".join(f"{column} = ${first + i}" for i, column in enumerate(changes))


class NotFound(Exception):
    """No such campaign, or it belongs to someone else."""
