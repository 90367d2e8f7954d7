"""The simulator's own endpoints, under `/simulator/`: what it saw, and what to do next.

Reading (GET): `stats`; `sends?callback=ID`; `last?phone_number_id=ID`; `accepted`
(every accepted send counted exactly per number and per `to`; see `accepted()`);
`timeline?phone_number_id=ID&kind=accepted|sent|delivered|read|reply|failed`;
`numbers/{id}` (behaviour and use of its limits).

Telling (POST, JSON): `numbers/{id}` (a `NumberUpdate`: messaging limit, portfolio,
mps, forced error); `webhooks/template-status`, `webhooks/quality`,
`webhooks/account-update`, which post the signed webhook at once and answer with what
the receiver answered. Bad input answers 400 `{"error": {"message", "field"}}`.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Annotated, Any, Literal
from urllib.parse import unquote

import msgspec

from engine.tools.simulator import notifications
from engine.tools.simulator.cloud_api import CloudApi
from engine.tools.simulator.config import (
    InvalidBehaviour,
    SimulatorConfig,
    parse_number_update,
    validation_field,
)
from engine.tools.simulator.post_connection import PostError
from engine.tools.simulator.record import SimulatorState
from engine.tools.simulator.webhooks import Webhooks

_encode = msgspec.json.Encoder().encode
Answer = tuple[int, bytes]

Text = Annotated[str, msgspec.Meta(min_length=1, max_length=512)]
EventName = Annotated[str, msgspec.Meta(pattern=r"^[A-Z][A-Z_]{0,63}$")]


class TemplateStatus(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: Text
    language: Text
    event: Literal["APPROVED", "PAUSED", "DISABLED", "REJECTED", "FLAGGED", "REINSTATED",
                   "PENDING_DELETION", "DELETED"]  # fmt: skip
    reason: Text | None = None


class QualityUpdate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    phone_number_id: Text
    event: Literal["FLAGGED", "UNFLAGGED", "DOWNGRADE", "UPGRADE", "ONBOARDING"]
    current_limit: Literal["TIER_50", "TIER_250", "TIER_1K", "TIER_2K", "TIER_10K",
                           "TIER_100K", "TIER_UNLIMITED"]  # fmt: skip
    display_phone_number: Text | None = None


class AccountUpdate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    event: EventName  # e.g. ACCOUNT_RESTRICTION, ACCOUNT_VIOLATION, DISABLED_UPDATE
    phone_number_id: Text | None = None  # its display number, unless phone_number is given
    phone_number: Text | None = None
    restriction_info: list[dict[str, Any]] | None = None
    ban_info: dict[str, Any] | None = None
    violation_info: dict[str, Any] | None = None


_KINDS = frozenset({"accepted", "sent", "delivered", "read", "reply", "failed"})


def _json(status: int, document: Any) -> Answer:
    return status, _encode(document)


def _error(status: int, message: str, field: str | None = None) -> Answer:
    error: dict[str, Any] = {"message": message}
    if field is not None:
        error["field"] = field
    return _json(status, {"error": error})


def _invalid(exc: msgspec.MsgspecError) -> Answer:
    message = str(exc)
    field = validation_field(message) if isinstance(exc, msgspec.ValidationError) else None
    return _error(400, message, field)


def parse_query(query: str) -> dict[str, str]:
    """`a=1&b=%2B1` → {"a": "1", "b": "+1"}; a `+` stays a `+` (phone numbers)."""
    params: dict[str, str] = {}
    for part in query.split("&"):
        if part:
            name, _, value = part.partition("=")
            params[unquote(name)] = unquote(value)
    return params


class Control:
    def __init__(
        self,
        config: SimulatorConfig,
        state: SimulatorState,
        cloud_api: CloudApi,
        webhooks: Webhooks | None,
    ) -> None:
        self.config = config
        self.state = state
        self.cloud_api = cloud_api
        self.webhooks = webhooks

    async def handle(self, method: bytes, path: str, query: str, body: bytes) -> Answer | None:
        """The answer for a `/simulator/...` request, or None if there is no such route."""
        params = parse_query(query)
        route = path.removeprefix("/simulator/")
        if method == b"GET":
            if route == "stats":
                return _json(200, self.state.statistics())
            if route == "sends":
                callback = params.get("callback", "")
                return _json(200, {"callback": callback,
                                   "accepted": self.state.sends_for(callback)})  # fmt: skip
            if route == "last":
                phone = params.get("phone_number_id", "")
                count, at = self.state.last_accept.get(phone, (0, None))
                return _json(200, {"phone_number_id": phone, "accepted": count,
                                   "last_accepted_at": at})  # fmt: skip
            if route == "accepted":
                return self.accepted(params)
            if route == "timeline":
                return self.timeline(params)
            if route.startswith("numbers/") and len(route) > len("numbers/"):
                return _json(200, self.cloud_api.describe(unquote(route[len("numbers/") :])))
        elif method == b"POST":
            if route.startswith("numbers/") and len(route) > len("numbers/"):
                return self.update_number(unquote(route[len("numbers/") :]), body)
            if route == "webhooks/template-status":
                return await self.template_status(body)
            if route == "webhooks/quality":
                return await self.quality(body)
            if route == "webhooks/account-update":
                return await self.account_update(body)
        return None

    # -- reading ---------------------------------------------------------------------------

    def accepted(self, params: dict[str, str]) -> Answer:
        """Totals; per number: accepted sends, distinct recipients, and each `to` accepted
        more than once; with `to=`: that recipient's counts; with `counts=all`: every
        recipient's count; `last=N` (default 100): the newest accepted sends in full."""
        state = self.state
        phone = params.get("phone_number_id")
        phones = [phone] if phone is not None else sorted(state.to_counts)
        try:
            last = max(0, int(params.get("last", "100")))
        except ValueError:
            return _error(400, "last must be an integer", "last")
        by_phone: dict[str, Any] = {}
        repeated: list[dict[str, Any]] = []
        empty: Counter[str] = Counter()
        for number in phones:
            counts = state.to_counts.get(number, empty)
            twice = [(to, n) for to, n in counts.items() if n > 1]
            repeated += [{"phone_number_id": number, "to": to, "count": n} for to, n in twice]
            accepted, _ = state.last_accept.get(number, (0, 0.0))
            by_phone[number] = {
                "accepted": accepted,
                "recipients": len(counts),
                "sent_more_than_once": len(twice),
            }
        document: dict[str, Any] = {
            "accepted": sum(v["accepted"] for v in by_phone.values()),
            "rejected": sum(state.rejected_by_code.values()),
            "rejected_by_code": {str(c): n for c, n in state.rejected_by_code.items()},
            "failed_by_webhook": state.failed_by_webhook,
            "by_phone": by_phone,
            "sent_more_than_once": repeated,
        }
        to = params.get("to")
        if to is not None:
            document["to"] = {
                "to": to,
                "counts": {n: state.to_counts.get(n, empty)[to] for n in phones},
            }
        if params.get("counts") == "all":
            document["counts"] = {n: dict(state.to_counts.get(n, empty)) for n in phones}
        sends = [s for s in state.accepted_sends if phone is None or s.phone_number_id == phone]
        document["last"] = sends[-last:] if last else []
        return _json(200, document)

    def timeline(self, params: dict[str, str]) -> Answer:
        phone = params.get("phone_number_id", "")
        kind = params.get("kind", "accepted")
        if kind not in _KINDS:
            return _error(400, f"kind must be one of {', '.join(sorted(_KINDS))}", "kind")
        line = self.state.timelines.get((phone, kind))
        return _json(200, {
            "phone_number_id": phone,
            "kind": kind,
            "every": self.config.timeline_every,
            "count": 0 if line is None else line.count,
            "points": [] if line is None else list(line.points),
        })  # fmt: skip

    # -- telling ---------------------------------------------------------------------------

    def update_number(self, phone_number_id: str, body: bytes) -> Answer:
        try:
            update = parse_number_update(body or b"{}")
        except InvalidBehaviour as exc:
            return _error(400, str(exc), exc.field)
        self.cloud_api.update(phone_number_id, update)
        return _json(200, self.cloud_api.describe(phone_number_id))

    async def _post(self, body: bytes) -> Answer:
        if self.webhooks is None:
            return _error(409, "no webhook URL is configured (--webhook-url)")
        try:
            status = await self.webhooks.post_now(body)
        except PostError as exc:
            return _error(502, f"the webhook receiver did not answer: {exc}")
        document = {"receiver_status": status, "posted": msgspec.json.decode(body)}
        return _json(200, document)

    async def template_status(self, body: bytes) -> Answer:
        try:
            event = msgspec.json.decode(body, type=TemplateStatus)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return _invalid(exc)
        return await self._post(
            notifications.template_status_body(
                waba_id=self.config.waba_id,
                event=event.event,
                name=event.name,
                language=event.language,
                reason=event.reason,
                stamp=int(time.time()),
            )
        )

    def _display(self, phone_number_id: str) -> str:
        shown = self.cloud_api.behaviour(phone_number_id).display_phone_number
        return shown if shown is not None else self.config.display_phone_number

    async def quality(self, body: bytes) -> Answer:
        try:
            event = msgspec.json.decode(body, type=QualityUpdate)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return _invalid(exc)
        display = event.display_phone_number or self._display(event.phone_number_id)
        return await self._post(
            notifications.quality_body(
                waba_id=self.config.waba_id,
                display_phone_number=display,
                event=event.event,
                current_limit=event.current_limit,
                stamp=int(time.time()),
            )
        )

    async def account_update(self, body: bytes) -> Answer:
        try:
            event = msgspec.json.decode(body, type=AccountUpdate)
        except (msgspec.ValidationError, msgspec.DecodeError) as exc:
            return _invalid(exc)
        if event.phone_number is not None:
            phone_number = event.phone_number
        elif event.phone_number_id is not None:
            phone_number = self._display(event.phone_number_id)
        else:
            return _error(400, "phone_number_id or phone_number is required", "$.phone_number_id")
        return await self._post(
            notifications.account_update_body(
                waba_id=self.config.waba_id,
                phone_number=phone_number,
                event=event.event,
                restriction_info=event.restriction_info,
                ban_info=event.ban_info,
                violation_info=event.violation_info,
                stamp=int(time.time()),
            )
        )
