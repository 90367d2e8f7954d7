"""Template variables and the type-specific Cloud API object of a message.

`{{ name }}` placeholders are replaced in a single pass: a value that itself
contains `{{x}}` is sent as written, so a contact cannot inject placeholders.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from engine.core.tracked_links import LinkCodes, LinkRewriter
from engine.gateway import OutgoingMessage

# Names are ASCII letters, digits, `_`, `.` and `-`; whitespace may pad them.
# Anything else between braces (`{{ }}`, `{{a b}}`) is plain text.
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z0-9_.\-]+)\s*\}\}")


def render_text(template: str, variables: Mapping[str, str], defaults: Mapping[str, str]) -> str:
    """Replace every placeholder with its value, else the campaign default, else ""."""

    def value_of(match: re.Match[str]) -> str:
        name = match.group(1)
        # An empty value counts as missing, so the campaign default shows instead.
        return variables.get(name) or defaults.get(name) or ""

    return PLACEHOLDER.sub(value_of, template)


def contact_variables(
    first_name: str | None,
    last_name: str | None,
    phone: str | None,
    email: str | None,
    company: str | None,
    attributes: Mapping[str, str],
) -> dict[str, str]:
    """The variables a contact offers to templates.

    The six standard names win over custom attributes of the same name.
    """
    first = first_name or ""
    last = last_name or ""
    standard = {
        "firstName": first,
        "lastName": last,
        "name": f"{first} {last}".strip(),
        "phone": phone or "",
        "email": email or "",
        "company": company or "",
    }
    return {**attributes, **standard}


def render_payload(
    message_type: str,
    content: Any,
    variables: Mapping[str, str],
    defaults: Mapping[str, str],
    *,
    media_url: str | None = None,
) -> dict[str, Any]:
    """Build the Cloud API object for `message_type` (the value of its `type` key).

    Raises ValueError when `content` does not have the shape the type needs;
    the input is never modified.
    """
    match message_type:
        case "text":
            if not isinstance(content, str):
                raise ValueError("text message content must be a string")
            return {"body": render_text(content, variables, defaults), "preview_url": False}
        case "template":
            return _template_payload(content, variables, defaults)
        case "image" | "document":
            if not media_url:
                raise ValueError(f"{message_type} message needs a media URL")
            if content is None:
                content = ""
            if not isinstance(content, str):
                raise ValueError(f"{message_type} message content (its caption) must be a string")
            payload: dict[str, Any] = {"link": media_url}
            caption = render_text(content, variables, defaults)
            if caption:
                payload["caption"] = caption
            return payload
        case _:
            raise ValueError(f"unknown message type {message_type!r}")


def request_body(message: OutgoingMessage, reference: str | None) -> dict[str, Any]:
    """The Cloud API request body of `message`: what the gateway writes, and what a
    preview shows. `reference` is the engine's `biz_opaque_callback_data` for the
    recipient (engine/core/callback_reference.py); None leaves it out (a preview)."""
    body: dict[str, Any] = {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": message.to,
        "type": message.message_type,
        message.message_type: message.payload,
    }
    if reference is not None:
        # Echoed in its status webhooks; resolves the send if it ends in doubt.
        body["biz_opaque_callback_data"] = reference
    return body


def with_tracked_links(
    payload: dict[str, Any],
    recipient_id: int,
    *,
    key: bytes,
    urls: tuple[str, ...],
    base_url: str,
) -> dict[str, Any]:
    """A rendered text payload with the campaign's URLs replaced by this recipient's
    short links (engine/core/tracked_links.py); other payloads are returned as they are."""
    body = payload.get("body")
    if not isinstance(body, str) or not urls:
        return payload
    return {**payload, "body": _rewriter(key, urls, base_url).rewrite(body, recipient_id)}


@lru_cache(maxsize=64)
def _rewriter(key: bytes, urls: tuple[str, ...], base_url: str) -> LinkRewriter:
    # Prepared once per campaign (its regex, index and prefix), not per message.
    return LinkRewriter(LinkCodes(key), urls, base_url)


def _template_payload(
    content: Any, variables: Mapping[str, str], defaults: Mapping[str, str]
) -> dict[str, Any]:
    if not isinstance(content, Mapping):
        raise ValueError("template message content must be an object with name and language")
    name = content.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("template message content needs a name")
    language = content.get("language")
    if isinstance(language, Mapping):
        language = language.get("code")
    if not isinstance(language, str) or not language:
        raise ValueError("template message content needs a language code")

    payload: dict[str, Any] = {"name": name, "language": {"code": language}}
    components = content.get("components")
    if components is not None:
        if not isinstance(components, list):
            raise ValueError("template components must be a list")
        payload["components"] = [
            _render_component(component, variables, defaults) for component in components
        ]
    return payload


def _render_component(
    component: Any, variables: Mapping[str, str], defaults: Mapping[str, str]
) -> Any:
    if not isinstance(component, Mapping):
        return _copy_json(component)
    rendered = {key: _copy_json(value) for key, value in component.items()}
    parameters = component.get("parameters")
    if isinstance(parameters, list):
        rendered["parameters"] = [
            _render_parameter(parameter, variables, defaults) for parameter in parameters
        ]
    return rendered


def _render_parameter(
    parameter: Any, variables: Mapping[str, str], defaults: Mapping[str, str]
) -> Any:
    rendered = _copy_json(parameter)
    if isinstance(rendered, dict) and isinstance(rendered.get("text"), str):
        rendered["text"] = render_text(rendered["text"], variables, defaults)
    return rendered


def _copy_json(value: Any) -> Any:
    # The stored content is shared by every recipient of a campaign: copy it
    # rather than hand out (and later mutate) the same nested objects.
    if isinstance(value, Mapping):
        return {key: _copy_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy_json(item) for item in value]
    return value
