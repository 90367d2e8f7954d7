"""The variables a campaign's message names, and which of them a contact lacks. Pure.

A variable is a contact field (`STANDARD`), a contact attribute, or a
`templateVariables` default (docs/http-api.md, "Variables"). These functions
find the names a message uses, with the field of the request that holds each,
so a refusal can name both; the store asks PostgreSQL the questions that need
the owner's contacts or the campaign's recipients.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import msgspec

from engine.core.rendering import PLACEHOLDER

# What `engine.core.rendering.contact_variables` gives every contact (possibly empty).
STANDARD = frozenset({"firstName", "lastName", "name", "phone", "email", "company"})


class Placeholder(msgspec.Struct, frozen=True):
    field: str  # the JSON path of the request field holding it: `messageContent`, ...
    name: str


class MissingVariables(Exception):
    """Variables a message needs that the contact (or the given values) lacks, with
    no default: `message` names them, `field` is where the first is used."""

    def __init__(self, found: Sequence[Placeholder], lacking: list[str]) -> None:
        first = next(p for p in found if p.name == lacking[0])
        shown = ", ".join(f"{{{{{name}}}}}" for name in lacking)
        self.names = lacking
        self.field = first.field
        self.message = (
            f"{first.field}: {shown} ha{'ve' if len(lacking) > 1 else 's'} no value for this"
            " contact and templateVariables has no default; give a value, add a default,"
            " or set allowMissingVariables to true to send it empty"
        )
        super().__init__(self.message)


def placeholders(
    message_type: str, content: Any, field: str = "messageContent"
) -> list[Placeholder]:
    """Every variable `content` names, once per (field, name), in reading order.

    The text of a text message and the caption of an image or document are one
    field; a template names its variables in its parameters' `text`. Content of
    the wrong shape names none (the renderer refuses it with its own reason).
    """
    found: list[Placeholder] = []
    for path, text in _texts(message_type, content, field):
        for match in PLACEHOLDER.finditer(text):
            placeholder = Placeholder(path, match.group(1))
            if placeholder not in found:
                found.append(placeholder)
    return found


def names(found: Iterable[Placeholder]) -> list[str]:
    """The distinct names, in order of first use."""
    return list(dict.fromkeys(p.name for p in found))


def needing_a_contact(found: Iterable[Placeholder], defaults: Collection[str]) -> list[str]:
    """Names that only a contact attribute can provide: not a contact field, no default."""
    return [name for name in names(found) if name not in STANDARD and name not in defaults]


def missing(
    found: Iterable[Placeholder], variables: Mapping[str, str], defaults: Collection[str]
) -> list[str]:
    """Names that would render empty for a contact with these `variables`: no value
    (an empty one counts as none, as the renderer reads it) and no default."""
    return [name for name in names(found) if not variables.get(name) and name not in defaults]


def _texts(message_type: str, content: Any, field: str) -> Iterable[tuple[str, str]]:
    if message_type != "template":
        if isinstance(content, str):
            yield field, content
        return
    if not isinstance(content, Mapping):
        return
    components = content.get("components")
    if not isinstance(components, list):
        return
    for i, component in enumerate(components):
        parameters = component.get("parameters") if isinstance(component, Mapping) else None
        if not isinstance(parameters, list):
            continue
        for j, parameter in enumerate(parameters):
            if isinstance(parameter, Mapping) and isinstance(parameter.get("text"), str):
                yield f"{field}.components[{i}].parameters[{j}].text", parameter["text"]
