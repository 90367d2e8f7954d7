"""`campaign-engine simulator ...`: the simulator as a program, until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal

import trio

from engine.tools.simulator.config import (
    InvalidBehaviour,
    NumberBehaviour,
    SimulatorConfig,
    parse_number_update,
)
from engine.tools.simulator.server import SimulatorHandle, serve_simulator


def _number(text: str) -> tuple[str, NumberBehaviour]:
    """`ID=JSON` → the number's behaviour (the JSON of `POST /simulator/numbers/{id}`)."""
    phone_number_id, sep, document = text.partition("=")
    if not sep or not phone_number_id:
        raise argparse.ArgumentTypeError(f"expected PHONE_NUMBER_ID=JSON, got {text!r}")
    try:
        update = parse_number_update(document.encode())
    except InvalidBehaviour as exc:
        raise argparse.ArgumentTypeError(f"{phone_number_id}: {exc}") from None
    return phone_number_id, update.applied_to(NumberBehaviour())


def parse_args(argv: list[str] | None) -> SimulatorConfig:
    parser = argparse.ArgumentParser(
        prog="campaign-engine simulator", description="Local stand-in for the WhatsApp Cloud API."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--failure-rate", type=float, default=0.0, help="share answered 131000")
    parser.add_argument("--mps", type=int, default=80, help="per phone number id; 0: unlimited")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument(
        "--number",
        type=_number,
        action="append",
        default=[],
        metavar="ID=JSON",
        help='per phone number id, e.g. 1001=\'{"messagingLimit": 250, "force": {"code": '
        '131048, "share": 0.5, "times": 10}, "mps": 20, "portfolio": "p1"}\' (repeatable; '
        "the JSON of POST /simulator/numbers/{id})",
    )
    parser.add_argument("--webhook-url", default=None)
    parser.add_argument("--app-secret", default="")
    parser.add_argument(
        "--webhook-batch", type=int, default=1, help="statuses per webhook request (default 1)"
    )
    parser.add_argument(
        "--webhook-posters", type=int, default=32, help="keep-alive connections (default 32)"
    )
    parser.add_argument("--sent-ms", type=float, default=0.0)
    parser.add_argument("--delivered-ms", type=float, default=50.0)
    parser.add_argument("--read-ms", type=float, default=100.0)
    parser.add_argument("--read-share", type=float, default=0.5)
    parser.add_argument("--reply-ms", type=float, default=150.0)
    parser.add_argument("--reply-share", type=float, default=0.1)
    parser.add_argument("--jitter-ms", type=float, default=0.0, help="spread of each delay")
    parser.add_argument("--display-phone-number", default="15550000000")
    parser.add_argument("--waba-id", default="WABA")
    parser.add_argument("--keep-requests", type=int, default=10_000)
    args = parser.parse_args(argv)
    if args.webhook_batch < 1 or args.webhook_posters < 1:
        parser.error("--webhook-batch and --webhook-posters must be >= 1")
    return SimulatorConfig(
        host=args.host,
        port=args.port,
        latency_ms=args.latency_ms,
        failure_rate=args.failure_rate,
        mps=args.mps,
        seed=args.seed,
        numbers=dict(args.number),
        webhook_url=args.webhook_url,
        app_secret=args.app_secret,
        webhook_batch=args.webhook_batch,
        webhook_posters=args.webhook_posters,
        sent_ms=args.sent_ms,
        delivered_ms=args.delivered_ms,
        read_ms=args.read_ms,
        read_share=args.read_share,
        reply_ms=args.reply_ms,
        reply_share=args.reply_share,
        jitter_ms=args.jitter_ms,
        display_phone_number=args.display_phone_number,
        waba_id=args.waba_id,
        keep_requests=args.keep_requests,
    )


async def _run_until_signalled(config: SimulatorConfig) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            handle: SimulatorHandle = await nursery.start(serve_simulator, config)
            print(f"simulator listening on {handle.url}", flush=True)
            async for _signal in signals:
                nursery.cancel_scope.cancel()
                break


def main(argv: list[str] | None = None) -> int:
    config = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    trio.run(_run_until_signalled, config)
    return 0
