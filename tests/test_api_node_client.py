"""The official JavaScript client (socket.io-client 4, default transports: polling
then the upgrade to websocket) receives its user's campaign events."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio

from tests.api_helpers import OTHER_USER, Harness, api, gateway

__all__ = ["api", "gateway"]

JS = Path(__file__).parent / "js"

pytestmark = [
    pytest.mark.node,
    pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning"),
    pytest.mark.skipif(
        shutil.which("node") is None or shutil.which("npm") is None,
        reason="node and npm are needed to run the JavaScript Socket.IO client",
    ),
]


class Lines:
    """JSON lines from a process's stdout."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = b""
        self.seen: list[dict[str, Any]] = []

    async def until(self, event: str, campaign_id: str | None = None) -> dict[str, Any]:
        while True:
            while b"\n" in self._buffer:
                line, self._buffer = self._buffer.split(b"\n", 1)
                item: dict[str, Any] = msgspec.json.decode(line)
                self.seen.append(item)
                if item["event"] == "connect_error":
                    raise AssertionError(f"the node client was refused: {item}")
                if item["event"] == event and (
                    campaign_id is None or item["payload"]["campaignId"] == campaign_id
                ):
                    return item
            chunk = await self._stream.receive_some(65536)
            if not chunk:
                raise AssertionError(f"node exited before {event}; saw {self.seen}")
            self._buffer += chunk


async def test_node_client_receives_its_users_events(api: Harness) -> None:
    with trio.fail_after(180):
        if not (JS / "node_modules" / "socket.io-client").is_dir():
            await trio.run_process(
                ["npm", "install", "--no-audit", "--no-fund"], cwd=JS, capture_stdout=True
            )
        account = await api.make_account()
        await api.make_contacts(10)
        campaign = await api.make_campaign(account)
        other = await api.make_campaign(await api.make_account(user=OTHER_USER), user=OTHER_USER)

        node = await trio.lowlevel.open_process(
            ["node", str(JS / "watch.mjs"), api.base_url, api.token()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        try:
            assert node.stdout is not None and node.stdin is not None
            lines = Lines(node.stdout)
            connected = await lines.until("connect")
            # The default: polling first, then the upgrade to websocket. The CONNECT
            # answer comes over whichever transport holds the socket by then: a quick
            # upgrade probe can win the race with the long poll.
            if connected["transport"] == "polling":
                upgraded = await lines.until("upgrade")
            else:
                upgraded = next(item for item in lines.seen if item["event"] == "upgrade")
            assert upgraded["transport"] == "websocket"

            await api.request("POST", f"/api/v1/campaigns/{other['id']}/cancel", user=OTHER_USER)
            await api.request("POST", f"/api/v1/campaigns/{campaign['id']}/start")
            started = await lines.until("campaign:started", campaign["id"])
            assert started["payload"]["totalRecipients"] == 10
            completed = await lines.until("campaign:completed", campaign["id"])
            assert completed["payload"]["campaign"]["stats"]["sent"] == 10
            assert completed["transport"] == "websocket"
            await node.stdin.aclose()
            assert await node.wait() == 0
        finally:
            if node.returncode is None:
                node.kill()
                await node.wait()

        events = [item for item in lines.seen if item["event"].startswith("campaign:")]
        assert {item["payload"]["campaignId"] for item in events} == {campaign["id"]}
        names = [item["event"] for item in events]
        assert names[0] == "campaign:started" and names[-1] == "campaign:completed"
        assert "campaign:progress" in names
