"""The Graph API errors the simulator answers, as WhatsApp sends them: an HTTP status and
`{"error": {"message", "type", "code", "error_data": {"messaging_product", "details"},
"fbtrace_id"}}`. Most are HTTP 400 whatever their nature, throttling included (130429,
131056); integrity errors (368, 131031) are 403; the access token error is 401."""

from __future__ import annotations

import msgspec

# code -> (HTTP status, title, details)
ERRORS: dict[int, tuple[int, str, str]] = {
    1: (400, "An unknown error occurred", "Invalid request or possible server error."),
    2: (503, "Service temporarily unavailable", "Temporary due to downtime or overload."),
    100: (400, "Invalid parameter", "Invalid request body"),
    190: (401, "Invalid OAuth access token.", "Missing bearer token"),
    368: (
        403,
        "Temporarily blocked for policies violations",
        "The WhatsApp Business Account associated with the app has been restricted or "
        "disabled for violating a platform policy.",
    ),
    130429: (400, "Rate limit hit", "Cloud API message throughput has been reached."),
    131000: (500, "Something went wrong", "Something went wrong"),
    131026: (400, "Message undeliverable", "Message Undeliverable."),
    131031: (
        403,
        "Business Account locked",
        "The WhatsApp Business Account associated with the app has been locked.",
    ),
    131042: (
        400,
        "Business eligibility payment issue",
        "Message failed to send because there were one or more errors related to your "
        "payment method.",
    ),
    131047: (
        400,
        "Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the customer "
        "last replied to this number.",
    ),
    131048: (
        400,
        "Spam rate limit hit",
        "Message failed to send because there are restrictions on how many messages can be "
        "sent from this phone number. This may be because too many previous messages were "
        "blocked or flagged as spam.",
    ),
    131049: (
        400,
        "This message was not delivered to maintain healthy ecosystem engagement.",
        "In order to maintain a healthy ecosystem engagement, the message failed to be delivered.",
    ),
    131051: (400, "Unsupported message type", "Message type is not currently supported."),
    131056: (
        400,
        "(Business Account, Consumer Account) pair rate limit hit",
        "Message failed to send because there were too many messages sent from this phone "
        "number to the same phone number in a short period of time.",
    ),
    132000: (
        400,
        "Number of parameters does not match the expected number of params",
        "The number of variable parameter values does not match the template.",
    ),
    132001: (
        404,
        "Template does not exist",
        "The template does not exist in the specified language or has not been approved.",
    ),
}

# The messaging limit has no code of its own in WhatsApp's documentation; a number over
# its portfolio's limit is refused as restricted in how many it may message.
MESSAGING_LIMIT_CODE = 131048
MESSAGING_LIMIT_DETAILS = (
    "Message failed to send because this business portfolio reached its messaging limit "
    "of {limit} unique users in a moving 24-hour period."
)

_encode = msgspec.json.Encoder().encode


def graph_error(code: int, details: str | None = None) -> tuple[int, bytes]:
    """(HTTP status, body) of the answer WhatsApp gives for `code`."""
    status, title, default_details = ERRORS[code]
    body = _encode(
        {
            "error": {
                "message": title,
                "type": "OAuthException",
                "code": code,
                "error_data": {
                    "messaging_product": "whatsapp",
                    "details": default_details if details is None else details,
                },
                "fbtrace_id": "SIMULATOR",
            }
        }
    )
    return status, body


def webhook_error(code: int) -> dict[str, object]:
    """The `errors[]` item of a `failed` status for `code`."""
    _status, title, details = ERRORS[code]
    return {
        "code": code,
        "title": title,
        "message": title,
        "error_data": {"details": details},
        "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
    }
