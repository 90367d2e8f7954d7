"""The bare send loop: the engine's own HTTP transport with nothing around it.

`concurrency` tasks, each with its own CloudApiGateway session (one keep-alive
connection), send `requests` text messages between them. The ceiling the full
pipeline is compared against.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from typing import Any

import trio

from engine.gateway import AccountEndpoint, OutgoingMessage
from engine.transport.cloud_api import CloudApiGateway


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_bare(
    url: str, phone_number_id: str, requests: int, concurrency: int
) -> dict[str, Any]:
    """Send `requests` messages to the Cloud API at `url` (e.g. http://127.0.0.1:9911/v21.0).

    CPU is this process's (getrusage): it includes an in-process simulator if there is one.
    """
    gateway = CloudApiGateway(connect_timeout=5.0, read_timeout=30.0)
    endpoint = AccountEndpoint("bench", url, phone_number_id, "bench-token")
    next_index = 0
    failures = 0
    sent = 0

    async def sender() -> None:
        nonlocal next_index, failures, sent
        async with gateway.open_session() as session:
            while next_index < requests:
                index = next_index
                next_index += 1
                message = OutgoingMessage(
                    index, f"+1555{index:07d}1", "text", {"body": f"Hello {index}"}
                )
                result = await session.send(endpoint, message)
                sent += 1
                if not result.ok:
                    failures += 1

    cpu_before, started = _cpu_seconds(), time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(sender)
    seconds = time.perf_counter() - started
    cpu = _cpu_seconds() - cpu_before
    return {
        "messages": sent,
        "failures": failures,
        "concurrency": concurrency,
        "seconds": round(seconds, 3),
        "messages_per_second": round(sent / seconds, 1) if seconds else 0.0,
        "cpu_seconds_per_1000": round(cpu / sent * 1000, 4) if sent else 0.0,
    }


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    if args.url:
        return await run_bare(args.url, args.phone_number_id, args.requests, args.concurrency)
    from engine.tools.simulator import SimulatorConfig, SimulatorHandle, serve_simulator

    config = SimulatorConfig(latency_ms=args.latency_ms, mps=0, keep_requests=0)
    async with trio.open_nursery() as nursery:
        handle: SimulatorHandle = await nursery.start(serve_simulator, config)
        summary = await run_bare(
            handle.api_url, args.phone_number_id, args.requests, args.concurrency
        )
        summary["simulator"] = "in-process (CPU includes it)"
        nursery.cancel_scope.cancel()
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Bare send loop over the engine's HTTP transport.")
    parser.add_argument("--url", help="Cloud API base URL; default: an in-process simulator")
    parser.add_argument("--phone-number-id", default="1001")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--latency-ms", type=float, default=0.0, help="in-process simulator only")
    args = parser.parse_args(argv)
    print(json.dumps(trio.run(_main, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
