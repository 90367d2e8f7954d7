"""The send endpoint, `POST [/{version}]/{phone_number_id}/messages`: its answers.

In order: no Bearer token → 401, code 190; a body that is not a Cloud API message →
400, code 100; the number's forced error, if it applies to this send; more than its
`mps` accepted sends in the last second → 400, code 130429; a `to` ending in `0000` →
400, code 131026; a `failure_rate` share → 500, code 131000; a new user beyond its
portfolio's messaging limit → 400, code 131048. Otherwise 200 with a wamid, and the
message's statuses are scheduled.
"""

from __future__ import annotations

import random
import secrets
from typing import Any

import msgspec
import trio

from engine.tools.simulator.config import NumberBehaviour, NumberUpdate, SimulatorConfig
from engine.tools.simulator.graph_errors import (
    MESSAGING_LIMIT_CODE,
    MESSAGING_LIMIT_DETAILS,
    graph_error,
)
from engine.tools.simulator.limits import ThroughputWindow, UniqueUsersWindow
from engine.tools.simulator.record import RecordedRequest, SimulatorState
from engine.tools.simulator.webhooks import Webhooks

_MESSAGE_TYPES = frozenset(
    {"text", "template", "image", "document", "audio", "video", "sticker", "location",
     "contacts", "interactive", "reaction"}
)  # fmt: skip

_ABSENT = msgspec.Raw()  # msgspec cannot decode `Raw | None`; empty Raw means absent


class _SendBody(msgspec.Struct):
    messaging_product: str | None = None
    to: str | None = None
    type: str | None = None
    biz_opaque_callback_data: str | None = None
    text: msgspec.Raw = _ABSENT
    template: msgspec.Raw = _ABSENT
    image: msgspec.Raw = _ABSENT
    document: msgspec.Raw = _ABSENT
    audio: msgspec.Raw = _ABSENT
    video: msgspec.Raw = _ABSENT
    sticker: msgspec.Raw = _ABSENT
    location: msgspec.Raw = _ABSENT
    contacts: msgspec.Raw = _ABSENT
    interactive: msgspec.Raw = _ABSENT
    reaction: msgspec.Raw = _ABSENT


_decode_send = msgspec.json.Decoder(_SendBody).decode
_encode = msgspec.json.Encoder().encode
_PREBUILT = {code: graph_error(code) for code in (190, 100, 130429, 131026, 131000)}


def _success_body(to: str, wamid: str) -> bytes:
    return b"".join(
        (
            b'{"messaging_product":"whatsapp","contacts":[{"input":',
            _encode(to),
            b',"wa_id":',
            _encode(to.lstrip("+")),
            b'}],"messages":[{"id":"',
            wamid.encode(),
            b'"}]}',
        )
    )


class CloudApi:
    """Decides each send's answer; owns the numbers' behaviours, their limit windows and
    the randomness. Records every answer in `state`."""

    def __init__(
        self, config: SimulatorConfig, state: SimulatorState, webhooks: Webhooks | None
    ) -> None:
        self.config = config
        self.state = state
        self.webhooks = webhooks
        self.random = random.Random(config.seed)
        self.prefix = f"wamid.sim{secrets.token_hex(4)}."
        self.count = 0
        self._behaviours: dict[str, NumberBehaviour] = {}
        self._forced_left: dict[str, int | None] = {}  # phone -> forced answers left
        self._limits: dict[str, int] = {}  # portfolio -> messaging limit
        self._reached: dict[str, UniqueUsersWindow] = {}  # portfolio -> users reached
        self._throughput: dict[str, ThroughputWindow] = {}
        for phone_number_id, behaviour in config.numbers.items():
            self.update(phone_number_id, _as_update(behaviour))

    # -- behaviour per number ------------------------------------------------------------

    def behaviour(self, phone_number_id: str) -> NumberBehaviour:
        behaviour = self._behaviours.get(phone_number_id) or NumberBehaviour()
        limit = self._limits.get(behaviour.portfolio_of(phone_number_id))
        if limit == behaviour.messaging_limit:
            return behaviour
        return msgspec.structs.replace(behaviour, messaging_limit=limit)

    def update(self, phone_number_id: str, update: NumberUpdate) -> NumberBehaviour:
        current = self._behaviours.get(phone_number_id) or NumberBehaviour()
        changed = update.applied_to(current)
        self._behaviours[phone_number_id] = changed
        portfolio = changed.portfolio_of(phone_number_id)
        if update.messaging_limit is not msgspec.UNSET:
            if update.messaging_limit is None:
                self._limits.pop(portfolio, None)
            else:
                self._limits[portfolio] = update.messaging_limit
        if update.force is not msgspec.UNSET:
            force = update.force
            self._forced_left[phone_number_id] = None if force is None else force.times
        return self.behaviour(phone_number_id)

    def describe(self, phone_number_id: str) -> dict[str, Any]:
        """The number's behaviour and its use of the limits, for the control endpoint."""
        behaviour = self.behaviour(phone_number_id)
        portfolio = behaviour.portfolio_of(phone_number_id)
        now = trio.current_time()
        window = self._reached.get(portfolio)
        opening = None if window is None else window.next_opening(now)
        count, _ = self.state.last_accept.get(phone_number_id, (0, 0.0))
        return {
            "phone_number_id": phone_number_id,
            "behaviour": msgspec.to_builtins(behaviour),
            "portfolio": portfolio,
            "messaging_limit": behaviour.messaging_limit,
            "unique_users_24h": 0 if window is None else window.used(now),
            "window_opens_in_seconds": None if opening is None else round(opening - now, 3),
            "forced_left": self._forced_left.get(phone_number_id),
            "accepted": count,
        }

    # -- sends -----------------------------------------------------------------------------

    def answer(self, phone_number_id: str, authorized: bool, body: bytes) -> tuple[int, bytes]:
        parsed: _SendBody | None = None
        if authorized:
            try:
                parsed = _decode_send(body)
            except msgspec.DecodeError:
                parsed = None
        callback = None if parsed is None else parsed.biz_opaque_callback_data
        to = None if parsed is None else parsed.to
        if not authorized:
            return self._refuse(phone_number_id, 190, body, callback, to)
        if (
            parsed is None
            or parsed.messaging_product != "whatsapp"
            or not parsed.to
            or parsed.type not in _MESSAGE_TYPES
            or not getattr(parsed, parsed.type)
        ):
            return self._refuse(phone_number_id, 100, body, callback, to)
        assert parsed.to is not None and parsed.type is not None
        to = parsed.to
        behaviour = self.behaviour(phone_number_id)
        forced = self._forced(phone_number_id, behaviour, parsed.type)
        if forced is not None and behaviour.force is not None and behaviour.force.via == "answer":
            return self._refuse(phone_number_id, forced, body, callback, to)
        now = trio.current_time()
        mps = self.config.mps if behaviour.mps is None else behaviour.mps
        if mps > 0:
            window = self._throughput.get(phone_number_id)
            if window is None:
                window = self._throughput[phone_number_id] = ThroughputWindow()
            if not window.admit(now, mps):
                return self._refuse(phone_number_id, 130429, body, callback, to)
        if to.endswith("0000"):
            return self._refuse(phone_number_id, 131026, body, callback, to)
        if self.config.failure_rate > 0 and self.random.random() < self.config.failure_rate:
            return self._refuse(phone_number_id, 131000, body, callback, to)
        if behaviour.messaging_limit is not None:
            portfolio = behaviour.portfolio_of(phone_number_id)
            reached = self._reached.get(portfolio)
            if reached is None:
                reached = self._reached[portfolio] = UniqueUsersWindow()
            if not reached.admit(to, now, behaviour.messaging_limit):
                details = MESSAGING_LIMIT_DETAILS.format(limit=behaviour.messaging_limit)
                return self._refuse(phone_number_id, MESSAGING_LIMIT_CODE, body, callback, to,
                                    details)  # fmt: skip
        self.count += 1
        wamid = f"{self.prefix}{self.count}"
        self.state.record(RecordedRequest(phone_number_id, 200, None, wamid, body, callback, to))
        if self.webhooks is not None:
            if forced is not None:
                self.webhooks.schedule_failure(phone_number_id, wamid, to, callback, forced)
            else:
                template = parsed.type == "template"
                self.webhooks.schedule_statuses(phone_number_id, wamid, to, callback, template)
        return 200, _success_body(to, wamid)

    def _forced(self, phone_number_id: str, behaviour: NumberBehaviour, kind: str) -> int | None:
        """The forced code for this send, if the number's `force` applies to it."""
        force = behaviour.force
        if force is None:
            return None
        if force.code == 131047 and kind == "template":
            return None  # templates may be sent outside the customer service window
        left = self._forced_left.get(phone_number_id)
        if left is not None and left <= 0:
            return None
        if force.share < 1.0 and self.random.random() >= force.share:
            return None
        if left is not None:
            self._forced_left[phone_number_id] = left - 1
        return force.code

    def _refuse(
        self,
        phone_number_id: str,
        code: int,
        body: bytes,
        callback: str | None,
        to: str | None,
        details: str | None = None,
    ) -> tuple[int, bytes]:
        prebuilt = _PREBUILT.get(code) if details is None else None
        status, answer = prebuilt if prebuilt is not None else graph_error(code, details)
        self.state.record(RecordedRequest(phone_number_id, status, code, None, body, callback, to))
        return status, answer


def _as_update(behaviour: NumberBehaviour) -> NumberUpdate:
    """A whole behaviour as the update that sets it."""
    return NumberUpdate(**{name: getattr(behaviour, name) for name in behaviour.__struct_fields__})
