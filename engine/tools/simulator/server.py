"""Serving: h11 over trio sockets, one task per keep-alive connection, and the tasks that
post webhooks. `serve_simulator` is what tests, the demo and the CLI run."""

from __future__ import annotations

import h11
import msgspec
import trio

from engine.tools.simulator.cloud_api import CloudApi
from engine.tools.simulator.config import SimulatorConfig
from engine.tools.simulator.control import Control
from engine.tools.simulator.record import SimulatorState
from engine.tools.simulator.webhooks import Webhooks

_JSON = (b"content-type", b"application/json")
_NOT_FOUND = msgspec.json.encode(
    {"error": {"message": "Unknown path", "code": 100, "type": "GraphMethodException"}}
)


class SimulatorHandle(msgspec.Struct, frozen=True):
    host: str
    port: int
    state: SimulatorState

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """What to configure as an account's `api_url`."""
        return f"{self.url}/v21.0"


def _phone_number_id(path: str) -> str | None:
    parts = path.split("/")
    if len(parts) >= 3 and parts[-1] == "messages" and parts[-2]:
        return parts[-2]
    return None


class _Router:
    def __init__(self, config: SimulatorConfig, cloud_api: CloudApi, control: Control) -> None:
        self.latency = config.latency_ms / 1000
        self.cloud_api = cloud_api
        self.control = control

    async def route(self, request: h11.Request, body: bytes) -> tuple[int, bytes]:
        target = request.target.decode("ascii", "replace")
        path, _, query = target.partition("?")
        if path.startswith("/simulator/"):
            answer = await self.control.handle(request.method, path, query, body)
            return answer if answer is not None else (404, _NOT_FOUND)
        if request.method == b"POST":
            phone_number_id = _phone_number_id(path)
            if phone_number_id is not None:
                authorized = any(
                    name == b"authorization"
                    and value[:7].lower() == b"bearer "
                    and value[7:].strip()
                    for name, value in request.headers
                )
                answer = self.cloud_api.answer(phone_number_id, authorized, body)
                if self.latency:
                    await trio.sleep(self.latency)
                return answer
        return 404, _NOT_FOUND


async def _serve_connection(stream: trio.SocketStream, router: _Router) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            request: h11.Request | None = None
            chunks: list[bytes] = []
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif type(event) is h11.Request:
                    request = event
                elif type(event) is h11.Data:
                    chunks.append(event.data)
                elif type(event) is h11.EndOfMessage:
                    break
                elif type(event) is h11.ConnectionClosed or event is h11.PAUSED:
                    return
            assert request is not None
            status, body = await router.route(request, b"".join(chunks))
            headers = [_JSON, (b"content-length", b"%d" % len(body))]
            data = conn.send(h11.Response(status_code=status, headers=headers)) or b""
            data += conn.send(h11.Data(data=body)) or b""
            data += conn.send(h11.EndOfMessage()) or b""
            await stream.send_all(data)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()
    except (trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError):
        return
    finally:
        await trio.aclose_forcefully(stream)


async def serve_simulator(
    config: SimulatorConfig,
    *,
    task_status: trio.TaskStatus[SimulatorHandle] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until cancelled; `task_status.started(handle)` once the port is bound."""
    state = SimulatorState(config.keep_requests, config.keep_accepted, config.timeline_every)
    webhooks = Webhooks(config, state) if config.webhook_url else None
    cloud_api = CloudApi(config, state, webhooks)
    if webhooks is not None:
        webhooks.display_of = lambda phone: (
            cloud_api.behaviour(phone).display_phone_number or config.display_phone_number
        )
    router = _Router(config, cloud_api, Control(config, state, cloud_api, webhooks))
    listeners = await trio.open_tcp_listeners(config.port, host=config.host)
    port = listeners[0].socket.getsockname()[1]

    async def handle(stream: trio.SocketStream) -> None:
        await _serve_connection(stream, router)

    try:
        async with trio.open_nursery() as nursery:
            if webhooks is not None:
                for poster in webhooks.posters:
                    nursery.start_soon(webhooks.run_poster, poster)
            await nursery.start(trio.serve_listeners, handle, listeners)
            task_status.started(SimulatorHandle(config.host, port, state))
    finally:
        if webhooks is not None:
            await webhooks.aclose()
