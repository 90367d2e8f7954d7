"""A server connection's socket, read and written through its descriptor.

For the two servers on a hot path, the webhook listener (api/webhook_listener.py)
and the simulator (engine/tools/simulator/server.py): trio's socket wrappers cost
a scheduler round trip per send and a failed recv (EAGAIN) before every wait.
trio still owns the socket: it closes it, and its I/O manager does the waiting.
"""

from __future__ import annotations

import os

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
