"""CloudApiGateway against the in-process simulator, over real loopback sockets."""

from __future__ import annotations

import json
from typing import Any

import trio

from engine.core.callback_reference import CallbackReferences
from engine.gateway import AccountEndpoint, OutgoingMessage
from engine.tools.simulator import SimulatorConfig, SimulatorHandle, serve_simulator
from engine.transport.cloud_api import CloudApiGateway


def _endpoint(handle: SimulatorHandle, phone_number_id: str = "1001") -> AccountEndpoint:
    return AccountEndpoint("acc", handle.api_url, phone_number_id, "token-1")


def _text(recipient_id: int, to: str = "+15551230001") -> OutgoingMessage:
    return OutgoingMessage(recipient_id, to, "text", {"body": f"hello {recipient_id}"})


async def _start(nursery: trio.Nursery, **config: Any) -> SimulatorHandle:
    handle: SimulatorHandle = await nursery.start(serve_simulator, SimulatorConfig(**config))
    return handle


async def test_success_returns_wamid_and_the_simulator_records_the_body() -> None:
    references = CallbackReferences(b"k" * 32)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            handle = await _start(nursery)
            gateway = CloudApiGateway(callback_references=references)
            async with gateway.open_session() as session:
                result = await session.send(_endpoint(handle), _text(42))
            nursery.cancel_scope.cancel()

    assert result.ok and result.http_status == 200
    assert result.provider_message_id is not None
    assert result.provider_message_id.startswith("wamid.")
    [request] = handle.state.requests
    assert request.phone_number_id == "1001" and request.wamid == result.provider_message_id
    assert json.loads(request.body) == {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "+15551230001",
        "type": "text",
        "text": {"body": "hello 42"},
        # The reference the daemon's webhooks verify, not the guessable row number.
        "biz_opaque_callback_data": references.issue(42),
    }
    assert references.recipient_id(json.loads(request.body)["biz_opaque_callback_data"]) == 42
    assert handle.state.sends_for(references.issue(42)) == 1


async def test_without_the_daemons_key_a_gateway_issues_references_of_its_own() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            handle = await _start(nursery)
            gateway = CloudApiGateway()
            async with gateway.open_session() as session:
                assert (await session.send(_endpoint(handle), _text(42))).ok
            nursery.cancel_scope.cancel()
    callback = json.loads(handle.state.requests[0].body)["biz_opaque_callback_data"]
    assert callback != "42" and gateway.references.recipient_id(callback) == 42
    assert CallbackReferences(b"k" * 32).recipient_id(callback) is None


async def test_template_body_carries_the_template_object() -> None:
    template = {"name": "welcome", "language": {"code": "en"}, "components": []}
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            handle = await _start(nursery)
            async with CloudApiGateway().open_session() as session:
                result = await session.send(
                    _endpoint(handle), OutgoingMessage(7, "+15551230002", "template", template)
                )
            nursery.cancel_scope.cancel()
    assert result.ok
    body = json.loads(handle.state.requests[0].body)
    assert body["type"] == "template" and body["template"] == template


async def test_number_ending_in_0000_is_undeliverable() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            handle = await _start(nursery)
            async with CloudApiGateway().open_session() as session:
                result = await session.send(_endpoint(handle), _text(1, to="+15551230000"))
            nursery.cancel_scope.cancel()
    assert not result.ok
    assert (result.http_status, result.error_code) == (400, 131026)
    assert result.error_message == "Message undeliverable"
    assert handle.state.statistics().accepted == 0


async def test_sends_beyond_mps_are_rate_limited_per_phone_number() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            handle = await _start(nursery, mps=5)
            async with CloudApiGateway().open_session() as session:
                results = [await session.send(_endpoint(handle), _text(i)) for i in range(8)]
                other = await session.send(_endpoint(handle, "2002"), _text(99))
            nursery.cancel_scope.cancel()
    assert [r.ok for r in results] == [True] * 5 + [False] * 3
    # As Meta does: throttling is an HTTP 400 carrying code 130429.
    assert {(r.http_status, r.error_code) for r in results[5:]} == {(400, 130429)}
    assert other.ok  # the window is per phone number id


async def test_failure_rate_one_fails_every_send_with_131000() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            handle = await _start(nursery, failure_rate=1.0, seed=3)
            async with CloudApiGateway().open_session() as session:
                results = [await session.send(_endpoint(handle), _text(i)) for i in range(3)]
            nursery.cancel_scope.cancel()
    assert {(r.ok, r.http_status, r.error_code) for r in results} == {(False, 500, 131000)}
    assert handle.state.statistics().rejected_by_code == {"131000": 3}


async def test_missing_token_is_rejected_with_190() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            handle = await _start(nursery)
            endpoint = AccountEndpoint("acc", handle.api_url, "1001", "")
            async with CloudApiGateway().open_session() as session:
                result = await session.send(endpoint, _text(1))
            nursery.cancel_scope.cancel()
    assert (result.ok, result.http_status, result.error_code) == (False, 401, 190)


async def test_one_session_reuses_one_connection() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            handle = await _start(nursery, mps=0)
            async with CloudApiGateway().open_session() as session:
                for i in range(20):
                    assert (await session.send(_endpoint(handle), _text(i))).ok
                connection = session._connections.get(next(iter(session._connections._connections)))
                assert connection.connections_opened == 1
            nursery.cancel_scope.cancel()


async def test_unreachable_api_is_a_result_not_an_exception() -> None:
    with trio.fail_after(10):
        listener = trio.socket.socket()
        await listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        listener.close()  # nothing listens on this port now
        endpoint = AccountEndpoint("acc", f"http://127.0.0.1:{port}/v21.0", "1001", "t")
        async with CloudApiGateway(connect_timeout=2).open_session() as session:
            result = await session.send(endpoint, _text(1))
    assert not result.ok and result.http_status is None
    assert result.error_message is not None and result.error_message.startswith("connect_error")


async def test_read_timeout_is_a_timeout_result() -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            handle = await _start(nursery, latency_ms=2000)
            async with CloudApiGateway(read_timeout=0.2).open_session() as session:
                result = await session.send(_endpoint(handle), _text(1))
            nursery.cancel_scope.cancel()
    assert (result.ok, result.http_status, result.error_message) == (False, None, "timeout")
