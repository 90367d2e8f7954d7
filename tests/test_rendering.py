"""Template variable rendering and the Cloud API message objects."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.core.rendering import PLACEHOLDER, contact_variables, render_payload, render_text

JOHN = contact_variables("John", "Doe", "+1234567890", "john@example.com", "Acme Corp", {})


def test_spec_example() -> None:
    template = "Hello {{firstName}}, welcome to {{company}}!"
    assert render_text(template, JOHN, {}) == "Hello John, welcome to Acme Corp!"


def test_contact_variables_match_the_spec() -> None:
    assert JOHN == {
        "firstName": "John",
        "lastName": "Doe",
        "name": "John Doe",
        "phone": "+1234567890",
        "email": "john@example.com",
        "company": "Acme Corp",
    }


@pytest.mark.parametrize(
    ("first", "last", "name"),
    [("John", None, "John"), (None, "Doe", "Doe"), (None, None, ""), ("", "Doe", "Doe")],
)
def test_full_name_has_no_stray_spaces(first: str | None, last: str | None, name: str) -> None:
    assert contact_variables(first, last, "+1", None, None, {})["name"] == name


def test_missing_contact_fields_are_empty_strings() -> None:
    variables = contact_variables(None, None, None, None, None, {})
    assert set(variables.values()) == {""}


def test_attributes_are_variables_but_do_not_override_standard_ones() -> None:
    variables = contact_variables(
        "John", "Doe", "+1", None, "Acme", {"plan": "gold", "firstName": "Mallory", "name": "x"}
    )
    assert variables["plan"] == "gold"
    assert variables["firstName"] == "John"
    assert variables["name"] == "John Doe"


@pytest.mark.parametrize(
    "template",
    [
        "{{firstName}}",
        "{{ firstName }}",
        "{{firstName  }}",
        "{{\tfirstName\n}}",
        "{{   firstName}}",
    ],
)
def test_whitespace_inside_the_braces(template: str) -> None:
    assert render_text(template, JOHN, {}) == "John"


def test_names_may_hold_digits_underscores_dots_and_hyphens() -> None:
    variables = {"order_id": "1", "order.total": "2", "promo-code": "3", "line2": "4"}
    template = "{{order_id}} {{order.total}} {{promo-code}} {{line2}}"
    assert render_text(template, variables, {}) == "1 2 3 4"


def test_names_are_case_sensitive() -> None:
    assert render_text("{{FirstName}}", JOHN, {}) == ""


def test_missing_variable_renders_the_campaign_default() -> None:
    assert render_text("Hi {{ coupon }}!", JOHN, {"coupon": "WELCOME10"}) == "Hi WELCOME10!"


def test_empty_value_renders_the_campaign_default() -> None:
    variables = contact_variables("", None, "+1", None, None, {})
    assert render_text("Hi {{firstName}}!", variables, {"firstName": "there"}) == "Hi there!"


def test_value_wins_over_default() -> None:
    assert render_text("Hi {{firstName}}!", JOHN, {"firstName": "there"}) == "Hi John!"


def test_missing_variable_without_default_renders_empty() -> None:
    assert render_text("Hi {{ nickname }}!", JOHN, {}) == "Hi !"
    assert render_text("Hi {{nickname}}!", JOHN, {"nickname": ""}) == "Hi !"


@pytest.mark.parametrize(
    "text",
    [
        "{{",
        "}}",
        "{{ }}",
        "{{}}",
        "a {{ b",
        "{{first name}}",
        "{{ü}}",
        "{ {firstName} }",
        "{firstName}",
    ],
)
def test_text_that_is_not_a_placeholder_is_left_as_is(text: str) -> None:
    assert render_text(text, JOHN, {}) == text


def test_extra_braces_around_a_placeholder_stay() -> None:
    assert render_text("{{{firstName}}}", JOHN, {}) == "{John}"


def test_values_are_not_rendered_again() -> None:
    variables = {"a": "{{b}}", "b": "secret"}
    assert render_text("{{a}}", variables, {}) == "{{b}}"
    assert render_text("{{x}}", {}, {"x": "{{b}}"}) == "{{b}}"
    # Juxtaposition can spell a placeholder; it is still not expanded.
    assert render_text("{{{{a}}}}", {"a": "b", "b": "secret"}, {}) == "{{b}}"


# --- properties ---------------------------------------------------------------

names = st.text(alphabet="abcXYZ019_.-", min_size=1, max_size=6)
values = st.text(max_size=8)
variable_maps = st.dictionaries(names, values, max_size=6)
padding = st.text(alphabet=" \t\n", max_size=2)
# Template text built from characters that make placeholders likely.
template_text = st.text(alphabet="abc_.- \t{}xyz", max_size=60) | st.text(max_size=60)


@given(template=st.text().filter(lambda text: "{{" not in text), variables=variable_maps)
def test_text_without_double_braces_is_unchanged(template: str, variables: dict[str, str]) -> None:
    assert render_text(template, variables, variables) == template


@given(
    segments=st.lists(
        st.one_of(
            st.tuples(st.just("text"), st.text(alphabet=st.characters(exclude_characters="{}"))),
            st.tuples(st.just("placeholder"), names, padding, padding),
        ),
        max_size=10,
    ),
    variables=variable_maps,
    defaults=variable_maps,
)
def test_every_placeholder_is_replaced_by_value_default_or_nothing(
    segments: list[tuple[str, ...]], variables: dict[str, str], defaults: dict[str, str]
) -> None:
    template_parts: list[str] = []
    expected_parts: list[str] = []
    for segment in segments:
        if segment[0] == "text":
            template_parts.append(segment[1])
            expected_parts.append(segment[1])
        else:
            _, name, before, after = segment
            template_parts.append("{{" + before + name + after + "}}")
            if variables.get(name):
                expected_parts.append(variables[name])
            elif defaults.get(name):
                expected_parts.append(defaults[name])
            else:
                expected_parts.append("")
    assert render_text("".join(template_parts), variables, defaults) == "".join(expected_parts)


@given(template=template_text)
def test_no_placeholder_survives(template: str) -> None:
    # Give every name a value that cannot be part of a placeholder; then no
    # placeholder can remain or be formed by juxtaposition.
    variables = {match.group(1): "#" for match in PLACEHOLDER.finditer(template)}
    assert PLACEHOLDER.search(render_text(template, variables, {})) is None


@given(template=template_text, variables=variable_maps, defaults=variable_maps)
def test_output_is_never_longer_than_template_plus_values(
    template: str, variables: dict[str, str], defaults: dict[str, str]
) -> None:
    # Single pass: each placeholder becomes exactly one value, never a re-expansion.
    output = render_text(template, variables, defaults)
    placeholders = len(PLACEHOLDER.findall(template))
    longest = max((len(value) for value in [*variables.values(), *defaults.values()]), default=0)
    assert len(output) <= len(template) + placeholders * longest


@given(
    name=names,
    value=st.text(alphabet="{} ab", max_size=20),
    other=names,
    other_value=values,
)
def test_values_with_braces_are_sent_as_written(
    name: str, value: str, other: str, other_value: str
) -> None:
    variables = {other: other_value, name: value}
    assert render_text("{{" + name + "}}", variables, {}) == value


# --- payloads -----------------------------------------------------------------


def test_text_payload() -> None:
    payload = render_payload("text", "Hi {{firstName}}", JOHN, {})
    assert payload == {"body": "Hi John", "preview_url": False}


def test_template_payload_with_language_code_string() -> None:
    content = {
        "name": "welcome",
        "language": "en_US",
        "components": [
            {
                "type": "body",
                "parameters": [
                    {"type": "text", "text": "{{ firstName }}"},
                    {"type": "text", "text": "{{coupon}}"},
                    {"type": "currency", "currency": {"code": "USD", "amount_1000": 1000}},
                ],
            },
            {
                "type": "button",
                "sub_type": "url",
                "index": "0",
                "parameters": [{"type": "text", "text": "{{company}}"}],
            },
        ],
    }
    original = copy.deepcopy(content)
    payload = render_payload("template", content, JOHN, {"coupon": "WELCOME10"})
    assert payload == {
        "name": "welcome",
        "language": {"code": "en_US"},
        "components": [
            {
                "type": "body",
                "parameters": [
                    {"type": "text", "text": "John"},
                    {"type": "text", "text": "WELCOME10"},
                    {"type": "currency", "currency": {"code": "USD", "amount_1000": 1000}},
                ],
            },
            {
                "type": "button",
                "sub_type": "url",
                "index": "0",
                "parameters": [{"type": "text", "text": "Acme Corp"}],
            },
        ],
    }
    assert content == original  # shared campaign content is not modified


def test_template_payload_shares_no_objects_with_the_content() -> None:
    content: dict[str, Any] = {
        "name": "t",
        "language": {"code": "en"},
        "components": [
            {"type": "header", "parameters": [{"type": "image", "image": {"link": "x"}}]}
        ],
    }
    payload = render_payload("template", content, JOHN, {})
    payload["components"][0]["parameters"][0]["image"]["link"] = "changed"
    assert content["components"][0]["parameters"][0]["image"]["link"] == "x"


def test_template_payload_with_language_object_and_no_components() -> None:
    content = {"name": "hello_world", "language": {"code": "en_US", "policy": "deterministic"}}
    payload = render_payload("template", content, JOHN, {})
    assert payload == {"name": "hello_world", "language": {"code": "en_US"}}


@pytest.mark.parametrize("message_type", ["image", "document"])
def test_media_payload_with_caption(message_type: str) -> None:
    payload = render_payload(
        message_type, "For {{name}}", JOHN, {}, media_url="https://example.com/a.pdf"
    )
    assert payload == {"link": "https://example.com/a.pdf", "caption": "For John Doe"}


@pytest.mark.parametrize("caption", ["", None, "{{nickname}}"])
def test_media_payload_omits_an_empty_caption(caption: str | None) -> None:
    payload = render_payload("image", caption, JOHN, {}, media_url="https://example.com/a.png")
    assert payload == {"link": "https://example.com/a.png"}


@pytest.mark.parametrize(
    ("message_type", "content", "media_url"),
    [
        ("text", {"body": "x"}, None),
        ("text", None, None),
        ("template", "welcome", None),
        ("template", {"language": "en"}, None),
        ("template", {"name": "t"}, None),
        ("template", {"name": "t", "language": {"policy": "x"}}, None),
        ("template", {"name": "t", "language": "en", "components": {"type": "body"}}, None),
        ("image", "caption", None),
        ("document", "caption", ""),
        ("image", 42, "https://example.com/a.png"),
        ("video", "x", "https://example.com/a.mp4"),
    ],
)
def test_malformed_content_is_refused(
    message_type: str, content: Any, media_url: str | None
) -> None:
    with pytest.raises(ValueError):
        render_payload(message_type, content, JOHN, {}, media_url=media_url)
