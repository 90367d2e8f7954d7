"""A connection's socket, read and written through its descriptor, and the reading
of a request head from it that both servers share.

For the two servers on a hot path, the webhook listener (api/webhook_listener.py)
and the simulator (engine/tools/simulator/server.py), and the simulator's webhook
posts (engine/tools/simulator/post_connection.py): trio's socket wrappers cost
a scheduler round trip per send and a failed recv (EAGAIN) before every wait.
trio still owns the socket: it closes it, and its I/O manager does the waiting.
"""

from __future__ import annotations

import os

import h11
import trio

RECEIVE_BYTES = 65536


class SocketWire:
    def __init__(self, stream: trio.SocketStream) -> None:
        self._fd = stream.socket.fileno()

    async def receive(self) -> bytes:
        """Some bytes, b"" at end of stream. Always waits first: a checkpoint."""
        while True:
            await trio.lowlevel.wait_readable(self._fd)
            try:
                return os.read(self._fd, RECEIVE_BYTES)
            except BlockingIOError:
                continue

    async def send_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self._fd, view) :]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self._fd)

    async def receive_head(
        self, received: bytes, closed: bool, limit: int
    ) -> tuple[bytes, int, bool]:
        """Receive until `received` holds a whole request head, the client closed, or
        more than `limit` bytes came without one: (what was received, where the head's
        blank line starts or -1, whether the client closed)."""
        end = received.find(b"\r\n\r\n")
        while end < 0 and not closed and len(received) <= limit:
            more = await self.receive()
            if more:
                # Only the new bytes can complete the terminator.
                start = max(0, len(received) - 3)
                received += more
                end = received.find(b"\r\n\r\n", start)
            else:
                closed = True
        return received, end, closed

    async def next_h11_event(self, conn: h11.Connection) -> object:
        """h11's next event, receiving what it needs for it."""
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            # b"" at end of stream tells h11 the client closed.
            conn.receive_data(await self.receive())
