"""What the engine does about a signal (a template, quality or account webhook). Pure.

docs/webhooks.md ("Signals") explains each choice. In short: a template PAUSED or
DISABLED pauses the running and scheduled campaigns that send it, marked with the
template's key, and APPROVED resumes exactly those; an account restriction that
stops business-initiated messages, or a ban, pauses every campaign of the
account's numbers and is never lifted by the engine; a quality update that names
a messaging limit below the accounts' `messagingLimit` lowers it (never raises it:
a limit the operator set lower stays theirs).
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

# Meta's messaging limit tiers: unique users per 24 h. TIER_UNLIMITED and TIER_NOT_SET
# lower nothing.
MESSAGING_TIERS = {
    "TIER_50": 50,
    "TIER_250": 250,
    "TIER_1K": 1_000,
    "TIER_2K": 2_000,
    "TIER_10K": 10_000,
    "TIER_100K": 100_000,
}


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


class LowerMessagingLimit(msgspec.Struct, frozen=True):
    """Set those accounts' messaging limit to `limit` where it is unset or higher."""

    limit: int


SignalAction = PauseCampaigns | ResumeCampaigns | LowerMessagingLimit


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
            tier = MESSAGING_TIERS.get(signal.max_daily_limit or signal.current_limit or "")
            return LowerMessagingLimit(tier) if tier is not None else None


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
        # An entry without a type names nothing to stop.
        blocking = [r for r in signal.restriction_types if r and r not in HARMLESS_RESTRICTIONS]
        if not blocking:
            return None
        return PauseCampaigns(
            key=f"account:{signal.event}",
            reason="WhatsApp restricted the account: " + ", ".join(blocking),
        )
    if signal.event == "DISABLED_UPDATE" and signal.ban_state in BANNED_STATES:
        return PauseCampaigns(key=f"account:{signal.event}", reason="WhatsApp disabled the account")
    return None
