"""What the engine does about a signal (a template, quality or account webhook). Pure.

docs/webhooks.md ("Signals") explains each choice. In short: a template PAUSED or
DISABLED pauses the running and scheduled campaigns that send it, marked with the
template's key, and APPROVED resumes exactly those; an account restriction that
stops business-initiated messages, or a ban, pauses every campaign of the
account's numbers and is never lifted by the engine; a quality update is only
recorded (the messaging limit it names is the portfolio's to set).
"""

from __future__ import annotations

import msgspec

from engine.messages import AccountSignal, QualitySignal, Signal, TemplateStatusSignal

# Restrictions that do not stop a campaign: adding numbers, or answering customers
# who wrote first. Any other (RESTRICTED_BIZ_INITIATED_MESSAGING, or one Meta adds
# later) does.
HARMLESS_RESTRICTIONS = frozenset(
    {"RESTRICTED_ADD_PHONE_NUMBER_ACTION", "RESTRICTED_CUSTOMER_INITIATED_MESSAGING"}
)
# ban_info.waba_ban_state values under which nothing can be sent.
BANNED_STATES = frozenset({"DISABLE"})

_TEMPLATE_PAUSES = {"PAUSED": "paused", "DISABLED": "disabled"}


class PauseCampaigns(msgspec.Struct, frozen=True):
    """Pause the matching campaigns of the accounts the signal names, marked `key`.

    With `template_name`, only the template campaigns sending it (in
    `template_language` when given); without, every campaign of those accounts,
    including ones already paused by another signal (so that signal's end does not
    resume them)."""

    key: str
    reason: str
    template_name: str | None = None
    template_language: str | None = None


class ResumeCampaigns(msgspec.Struct, frozen=True):
    """Resume the campaigns of those accounts the engine paused with `key`."""

    key: str


SignalAction = PauseCampaigns | ResumeCampaigns


def template_key(name: str, language: str | None) -> str:
    """`template:<language>:<name>`: languages hold no `:`, so the key is unambiguous."""
    return f"template:{language or ''}:{name}"


def decide(signal: Signal) -> SignalAction | None:
    """What to do about `signal`; None: record it only."""
    match signal:
        case TemplateStatusSignal():
            return _template_action(signal)
        case AccountSignal():
            return _account_action(signal)
        case QualitySignal():
            return None


def _template_action(signal: TemplateStatusSignal) -> SignalAction | None:
    key = template_key(signal.template_name, signal.template_language)
    if signal.event == "APPROVED":
        return ResumeCampaigns(key)
    verb = _TEMPLATE_PAUSES.get(signal.event)
    if verb is None:
        return None  # REJECTED, FLAGGED, PENDING_DELETION...: nothing running sends it
    shown = signal.template_name + (
        f" ({signal.template_language})" if signal.template_language else ""
    )
    why = f": {signal.reason}" if signal.reason and signal.reason != "NONE" else ""
    return PauseCampaigns(
        key=key,
        reason=f"WhatsApp {verb} the template {shown}{why}",
        template_name=signal.template_name,
        template_language=signal.template_language,
    )


def _account_action(signal: AccountSignal) -> SignalAction | None:
    if signal.event == "ACCOUNT_RESTRICTION":
        blocking = [r for r in signal.restriction_types if r not in HARMLESS_RESTRICTIONS]
        if not blocking:
            return None
        return PauseCampaigns(
            key=f"account:{signal.event}",
            reason="WhatsApp restricted the account: " + ", ".join(blocking),
        )
    if signal.event == "DISABLED_UPDATE" and signal.ban_state in BANNED_STATES:
        return PauseCampaigns(key=f"account:{signal.event}", reason="WhatsApp disabled the account")
    return None
