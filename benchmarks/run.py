"""`python -m benchmarks`: the bundled load test (CONTRACT section 8).

Starts the Cloud API simulator and the daemon as separate processes on 127.0.0.1, on a fresh
database it creates (and drops at the end), drives them over the HTTP API and Socket.IO like
a front end, and prints one JSON document. It asserts nothing. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from typing import Any

import aiohttp
import psutil

from benchmarks import scenarios
from benchmarks.client import Api, EventLog
from benchmarks.processes import fresh_database, running_stack

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Load test of the full pipeline against the simulator, with a bare send "
        "loop for comparison; prints one JSON document.",
    )
    parser.add_argument(
        "--recipients",
        type=int,
        default=100_000,
        help="recipients of the throughput/memory run (default 100000)",
    )
    parser.add_argument(
        "--campaigns",
        type=int,
        default=4,
        help="campaigns sharing the throughput run, one account each "
        "(an account sends at most 1,000/s; default 4)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=50,
        help="sender concurrency of the daemon and of the bare loop (default 50)",
    )
    parser.add_argument(
        "--latency-ms", type=float, default=20.0, help="simulator latency per send (default 20)"
    )
    parser.add_argument(
        "--rate-campaigns",
        type=int,
        default=3,
        help="concurrent campaigns of the rate-accuracy run (default 3)",
    )
    parser.add_argument(
        "--rates",
        default="600,1200,2400",
        help="their messages per minute, comma separated; cycled (default 600,1200,2400)",
    )
    parser.add_argument(
        "--rate-seconds",
        type=float,
        default=20.0,
        help="measuring window of the rate-accuracy run (default 20)",
    )
    parser.add_argument("--pauses", type=int, default=5, help="pauses measured (default 5)")
    parser.add_argument(
        "--million",
        action="store_true",
        help="also run 1,000,000 recipients (memory; takes several minutes)",
    )
    parser.add_argument("--skip-bare", action="store_true", help="no bare send loop")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_SERVER),
        help="PostgreSQL server to create the scratch database on "
        "(default $BENCH_DATABASE_URL or " + DEFAULT_SERVER + ")",
    )
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    args.rate_list = [rates[k % len(rates)] for k in range(args.rate_campaigns)]
    if args.rate_campaigns > scenarios.SLICES - 1:
        parser.error(f"--rate-campaigns: at most {scenarios.SLICES - 1}")
    return args


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "config": {
            "recipients": args.recipients,
            "campaigns": args.campaigns,
            "concurrency": args.concurrency,
            "latency_ms": args.latency_ms,
            "rates_per_minute": args.rate_list,
            "rate_seconds": args.rate_seconds,
            "pauses": args.pauses,
            "million": args.million,
        },
        "machine": {
            "cpus": psutil.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(terse=True),
        },
    }
    timeout = aiohttp.ClientTimeout(total=300)
    connector = aiohttp.TCPConnector(limit=20)
    async with (
        aiohttp.ClientSession(timeout=timeout, connector=connector) as http,
        fresh_database(args.database_url) as dsn,
        running_stack(
            dsn, latency_ms=args.latency_ms, concurrency=args.concurrency, http=http
        ) as stack,
    ):
        api = Api(http, stack.daemon_url, stack.jwt_secret, "bench")
        log = EventLog()
        await log.connect(stack.daemon_url, api.token)
        try:
            idle_rss = stack.daemon.rss_mb()
            started = time.time()
            imported = await api.import_contacts(
                scenarios.contacts(
                    args.recipients, prefix="555", parts=args.campaigns, part_tag="part"
                )
            )
            import_seconds = time.time() - started
            result["contacts_import"] = {
                "contacts": imported,
                "seconds": round(import_seconds, 2),
                "per_second": round(imported / import_seconds, 1),
            }
            run = await scenarios.throughput(
                api, log, stack, campaigns=args.campaigns, part_tag="part",
                phone_prefix="tp", recipients=args.recipients,
            )  # fmt: skip
            result["engine"] = run["engine"]
            memory = run["memory"] | {"idle_rss_mb_before_import": round(idle_rss, 1)}
            if not args.skip_bare:
                result["bare"] = await scenarios.bare(
                    stack, requests=run["engine"]["messages"], concurrency=args.concurrency
                )
                bare_rate = result["bare"]["messages_per_second"]
                engine_rate = run["engine"]["messages_per_second"]
                result["ratio"] = round(engine_rate / bare_rate, 3) if bare_rate else None
            if args.rate_campaigns > 0:
                result["rate_accuracy"] = await scenarios.rate_accuracy(
                    api, log, stack, http, rates=args.rate_list, seconds=args.rate_seconds
                )
            if args.pauses > 0:
                pauses = await scenarios.pause_latency(api, log, stack, http, pauses=args.pauses)
                result["pause_latency_ms"] = pauses["to_last_send_ms"] | {
                    "to_paused_event": pauses["to_paused_event_ms"]
                }
            if args.million:
                await api.import_contacts(
                    scenarios.contacts(
                        1_000_000, prefix="666", parts=args.campaigns, part_tag="million"
                    )
                )
                big = await scenarios.throughput(
                    api, log, stack, campaigns=args.campaigns, part_tag="million",
                    phone_prefix="mm", recipients=1_000_000,
                )  # fmt: skip
                memory = {"runs": [memory, big["memory"]], "engine_million": big["engine"]}
            result["memory"] = memory
        finally:
            await log.close()
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
