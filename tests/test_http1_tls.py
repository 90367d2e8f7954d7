"""HTTPS through engine/http1.py: TLS with certificate verification (a throwaway CA)."""

from __future__ import annotations

import ssl

import h11
import pytest
import trio
import trustme

from engine.transport.http1 import HTTPConnection, HTTPConnectionError, Origin


async def _serve_echo(tls_stream: trio.SSLStream[trio.SocketStream]) -> None:
    conn = h11.Connection(h11.SERVER)
    async with tls_stream:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await tls_stream.receive_some(65536)
                if not data:
                    return
                conn.receive_data(data)
            elif isinstance(event, h11.EndOfMessage):
                body = b"secure"
                out = conn.send(h11.Response(status_code=200, headers=[(b"content-length", b"6")]))
                out = (out or b"") + (conn.send(h11.Data(data=body)) or b"")
                out += conn.send(h11.EndOfMessage()) or b""
                await tls_stream.send_all(out)
                conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                return


async def _start_tls_server(nursery: trio.Nursery, ca: trustme.CA) -> int:
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)

    async def handle(tcp: trio.SocketStream) -> None:
        try:
            await _serve_echo(trio.SSLStream(tcp, server_context, server_side=True))
        except trio.BrokenResourceError:
            pass  # the client refused our certificate

    listeners = await nursery.start(trio.serve_tcp, handle, 0)
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def test_https_request_with_a_trusted_certificate_reuses_the_connection() -> None:
    ca = trustme.CA()
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await _start_tls_server(nursery, ca)
            connection = HTTPConnection(
                Origin("https", "127.0.0.1", port), ssl_context=client_context
            )
            for _ in range(3):
                response = await connection.request("POST", "/messages", [], b"{}")
                assert (response.status, response.body) == (200, b"secure")
            assert connection.connections_opened == 1
            await connection.aclose()
            nursery.cancel_scope.cancel()


async def test_an_untrusted_certificate_is_refused_before_anything_is_sent() -> None:
    ca = trustme.CA()  # the client does not trust this CA
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            port = await _start_tls_server(nursery, ca)
            connection = HTTPConnection(
                Origin("https", "127.0.0.1", port), ssl_context=ssl.create_default_context()
            )
            with pytest.raises(HTTPConnectionError) as refused:
                await connection.request("POST", "/messages", [], b"{}")
            assert refused.value.request_sent is False
            assert "CERTIFICATE_VERIFY_FAILED" in str(refused.value)
            nursery.cancel_scope.cancel()
