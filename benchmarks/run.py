"""`python -m benchmarks`: the bundled load test.

Each scenario starts the Cloud API simulator(s) and the daemon as separate processes on
127.0.0.1, on a fresh database it creates (and drops at the end), drives them over the
HTTP API and Socket.IO like a front end, and adds its figures to one JSON document. It
asserts nothing. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import psutil

from benchmarks import scenarios
from benchmarks.client import Api, EventLog
from benchmarks.full_speed import audience_size, full_speed
from benchmarks.processes import SimulatorSpec, Stack, fresh_database, running_stack
from benchmarks.scale import many_campaigns, many_sockets, million

DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/"
SCENARIOS = (
    "pipeline",
    "webhook-ingestion",
    "full-speed",
    "scale-campaigns",
    "scale-sockets",
    "million",
)
ALIASES = {"scale": ("scale-campaigns", "scale-sockets", "million"), "all": SCENARIOS}
DEFAULT_SCENARIOS = ("pipeline", "webhook-ingestion")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Load test of the full pipeline against the simulator, with a bare send "
        "loop for comparison; prints one JSON document.",
    )
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        help=f"what to run, repeatable or comma separated: {', '.join(SCENARIOS)}; "
        "'scale' = scale-campaigns,scale-sockets,million; 'all' (default: "
        f"{','.join(DEFAULT_SCENARIOS)})",
    )
    pipeline = parser.add_argument_group("pipeline (the default scenario)")
    pipeline.add_argument(
        "--recipients",
        type=int,
        default=50_000,
        help="recipients of the throughput run, webhooks off (default 50000)",
    )
    pipeline.add_argument(
        "--campaigns",
        type=int,
        default=4,
        help="campaigns sharing each throughput run, one account each "
        "(an account sends at most 1,000/s; default 4)",
    )
    pipeline.add_argument(
        "--concurrency",
        type=int,
        default=50,
        help="sender concurrency of the daemon and of the bare loop (default 50)",
    )
    pipeline.add_argument(
        "--latency-ms", type=float, default=20.0, help="simulator latency per send (default 20)"
    )
    pipeline.add_argument(
        "--webhook-recipients",
        type=int,
        default=20_000,
        help="recipients of the throughput run with the simulator's webhooks on, one status "
        "per request (default 20000; 0: skip)",
    )
    pipeline.add_argument(
        "--webhook-door",
        choices=("listener", "api"),
        default="listener",
        help="where the simulator posts webhooks: the daemon's dedicated webhook listener "
        "when it has one (default), or POST /webhooks/whatsapp on the API port",
    )
    # Meta sends about 3.5 webhook requests per message: sent, delivered, read and some
    # inbound replies, one each. The simulator's own defaults are a quieter audience.
    pipeline.add_argument(
        "--read-share",
        type=float,
        default=1.0,
        help="share of messages the simulator reports read, webhooks on (default 1.0)",
    )
    pipeline.add_argument(
        "--reply-share",
        type=float,
        default=0.5,
        help="share of messages the simulator answers with an inbound reply (default 0.5: "
        "with --read-share 1.0, 3.5 webhook requests per message)",
    )
    pipeline.add_argument(
        "--rate-campaigns",
        type=int,
        default=3,
        help="concurrent campaigns of the rate-accuracy run (default 3)",
    )
    pipeline.add_argument(
        "--rates",
        default="600,1200,2400",
        help="their messages per minute, comma separated; cycled (default 600,1200,2400)",
    )
    pipeline.add_argument(
        "--rate-seconds",
        type=float,
        default=20.0,
        help="measuring window of the rate-accuracy run (default 20)",
    )
    pipeline.add_argument("--pauses", type=int, default=5, help="pauses measured (default 5)")
    pipeline.add_argument("--skip-bare", action="store_true", help="no bare send loop")
    fast = parser.add_argument_group("full-speed: one number at full speed")
    fast.add_argument("--full-speed-rate", type=int, default=1000, help="msg/s (default 1000)")
    fast.add_argument("--full-speed-latency-ms", type=float, default=200.0, help="default 200")
    fast.add_argument("--full-speed-concurrency", type=int, default=300, help="default 300")
    fast.add_argument("--full-speed-seconds", type=float, default=60.0, help="window (default 60)")
    fast.add_argument("--full-speed-warmup", type=float, default=10.0, help="default 10")
    scale = parser.add_argument_group("scale-campaigns, scale-sockets, million")
    scale.add_argument("--scale-campaigns", type=int, default=1000, help="default 1000")
    scale.add_argument("--scale-per-minute", type=float, default=30.0, help="each (default 30)")
    scale.add_argument(
        "--scale-audience", type=int, default=200, help="recipients of each (default 200)"
    )
    scale.add_argument("--scale-seconds", type=float, default=60.0, help="window (default 60)")
    scale.add_argument("--scale-warmup", type=float, default=10.0, help="default 10")
    scale.add_argument("--sockets", type=int, default=1000, help="clients (default 1000)")
    scale.add_argument(
        "--socket-messages", type=int, default=3000, help="messages sent (default 3000)"
    )
    scale.add_argument("--million-contacts", type=int, default=1_000_000, help="default 1000000")
    scale.add_argument(
        "--million-seconds",
        type=float,
        default=120.0,
        help="how long the million campaigns send before they are cancelled (default 120; "
        "0: until they complete, about 20 minutes here)",
    )
    parser.add_argument(
        "--million", action="store_true", help="also run the million scenario (same as "
        "--scenario million)",
    )  # fmt: skip
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_SERVER),
        help="PostgreSQL server to create the scratch databases on "
        "(default $BENCH_DATABASE_URL or " + DEFAULT_SERVER + ")",
    )
    args = parser.parse_args(argv)
    chosen: list[str] = []
    for item in [part for value in args.scenario for part in value.split(",") if part.strip()]:
        name = item.strip()
        if name not in SCENARIOS and name not in ALIASES:
            parser.error(f"--scenario: unknown {name!r}; choose from {', '.join(SCENARIOS)}")
        chosen += ALIASES.get(name, (name,))
    if args.million:
        chosen.append("million")
    if not args.scenario:
        chosen = [*DEFAULT_SCENARIOS, *chosen]
    args.scenarios = [s for s in SCENARIOS if s in chosen]  # each once, in a fixed order
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    args.rate_list = [rates[k % len(rates)] for k in range(args.rate_campaigns)]
    if args.rate_campaigns > scenarios.SLICES - 1:
        parser.error(f"--rate-campaigns: at most {scenarios.SLICES - 1}")
    return args


async def _connected(stack: Stack, http: aiohttp.ClientSession) -> tuple[Api, EventLog]:
    api = Api(http, stack.daemon_url, stack.jwt_secret, "bench")
    log = EventLog()
    await log.connect(stack.daemon_url, api.token)
    return api, log


async def _import(api: Api, count: int, *, prefix: str, parts: int, tag: str) -> dict[str, Any]:
    started = time.time()
    imported = await api.import_contacts(
        scenarios.contacts(count, prefix=prefix, parts=parts, part_tag=tag)
    )
    seconds = time.time() - started
    return {"contacts": imported, "seconds": round(seconds, 2),
            "per_second": round(imported / seconds, 1)}  # fmt: skip


def _audience(args: argparse.Namespace) -> tuple[str, ...]:
    """How the simulator's recipients answer: what decides the webhooks per message."""
    return ("--read-share", str(args.read_share), "--reply-share", str(args.reply_share))


async def run_pipeline(args: argparse.Namespace, http: aiohttp.ClientSession) -> dict[str, Any]:
    """Webhooks off: the pipeline, the bare loop, rates, pauses. Then the pipeline against
    a second simulator whose webhooks are on, one status per request."""
    result: dict[str, Any] = {}
    simulators = {
        "quiet": SimulatorSpec(args.latency_ms),
        "hooks": SimulatorSpec(args.latency_ms, webhooks=True, extra_args=_audience(args)),
    }
    async with (
        fresh_database(args.database_url) as dsn,
        running_stack(dsn, concurrency=args.concurrency, http=http, simulators=simulators,
                      webhook_door=args.webhook_door) as stack,
    ):  # fmt: skip
        api, log = await _connected(stack, http)
        try:
            idle_rss = stack.daemon.rss_mb()
            result["contacts_import"] = await _import(
                api, args.recipients, prefix="555", parts=args.campaigns, tag="part"
            )
            run = await scenarios.throughput(
                api, log, stack, campaigns=args.campaigns, part_tag="part",
                phone_prefix="tp", recipients=args.recipients,
            )  # fmt: skip
            result["engine"] = run["engine"] | {"webhooks": "off"}
            memory = run["memory"] | {"idle_rss_mb_before_import": round(idle_rss, 1)}
            if not args.skip_bare:
                result["bare"] = await scenarios.bare(
                    stack, requests=run["engine"]["messages"], concurrency=args.concurrency
                )
                bare_rate = result["bare"]["messages_per_second"]
                engine_rate = run["engine"]["messages_per_second"]
                result["ratio"] = round(engine_rate / bare_rate, 3) if bare_rate else None
            if args.webhook_recipients > 0:
                await _import(
                    api, args.webhook_recipients, prefix="777", parts=args.campaigns, tag="wpart"
                )
                hooked = await scenarios.throughput_with_webhooks(
                    api, log, stack, http, stack.simulators["hooks"], campaigns=args.campaigns,
                    part_tag="wpart", recipients=args.webhook_recipients,
                )  # fmt: skip
                result["engine_with_webhooks"] = hooked["engine"]
                off = run["engine"]["messages_per_second"]
                on = hooked["engine"]["messages_per_second"]
                result["webhooks_on_vs_off"] = round(on / off, 3) if off else None
            if args.rate_campaigns > 0:
                result["rate_accuracy"] = await scenarios.rate_accuracy(
                    api, log, stack, http, rates=args.rate_list, seconds=args.rate_seconds
                )
            if args.pauses > 0:
                pauses = await scenarios.pause_latency(api, log, stack, http, pauses=args.pauses)
                result["pause_latency_ms"] = pauses["to_last_send_ms"] | {
                    "to_paused_event": pauses["to_paused_event_ms"]
                }
            result["memory"] = memory
        finally:
            await log.close()
    return result


async def run_full_speed(args: argparse.Namespace, http: aiohttp.ClientSession) -> dict[str, Any]:
    spec = SimulatorSpec(args.full_speed_latency_ms, webhooks=True, extra_args=_audience(args))
    async with (
        fresh_database(args.database_url) as dsn,
        running_stack(dsn, concurrency=args.full_speed_concurrency, http=http,
                      simulators={"hooks": spec}, webhook_door=args.webhook_door) as stack,
    ):  # fmt: skip
        api, log = await _connected(stack, http)
        try:
            count = audience_size(
                args.full_speed_rate, args.full_speed_seconds, args.full_speed_warmup
            )
            await _import(api, count, prefix="888", parts=1, tag="fullspeed")
            figures = await full_speed(
                api, log, stack, http, rate=args.full_speed_rate, tag="fullspeed0",
                seconds=args.full_speed_seconds, warmup=args.full_speed_warmup,
            )  # fmt: skip
        finally:
            await log.close()
    return figures | {
        "latency_ms": args.full_speed_latency_ms,
        "concurrency": args.full_speed_concurrency,
    }


async def run_scale_campaigns(
    args: argparse.Namespace, http: aiohttp.ClientSession
) -> dict[str, Any]:
    env = {"CAMPAIGN_ENGINE_ENGINE_MAX_RUNNING_CAMPAIGNS": str(args.scale_campaigns + 10)}
    async with (
        fresh_database(args.database_url) as dsn,
        running_stack(dsn, concurrency=args.concurrency, http=http, daemon_env=env,
                      simulators={"quiet": SimulatorSpec(args.latency_ms)}) as stack,
    ):  # fmt: skip
        api, log = await _connected(stack, http)
        try:
            await _import(api, args.scale_audience, prefix="999", parts=1, tag="scale")
            return await many_campaigns(
                api, stack, count=args.scale_campaigns, per_minute=args.scale_per_minute,
                tag="scale0", warmup=args.scale_warmup, seconds=args.scale_seconds,
            )  # fmt: skip
        finally:
            await log.close()


async def run_scale_sockets(
    args: argparse.Namespace, http: aiohttp.ClientSession
) -> dict[str, Any]:
    async with (
        fresh_database(args.database_url) as dsn,
        running_stack(dsn, concurrency=args.concurrency, http=http,
                      simulators={"quiet": SimulatorSpec(args.latency_ms)}) as stack,
    ):  # fmt: skip
        api, log = await _connected(stack, http)
        try:
            await _import(api, args.socket_messages, prefix="444", parts=1, tag="sockets")
            return await many_sockets(
                api, stack, http, clients=args.sockets, latency_ms=args.latency_ms,
                tag_one="sockets0", tag_many="sockets0",
            )  # fmt: skip
        finally:
            await log.close()


async def run_million(args: argparse.Namespace, http: aiohttp.ClientSession) -> dict[str, Any]:
    async with (
        fresh_database(args.database_url) as dsn,
        running_stack(dsn, concurrency=args.concurrency, http=http,
                      simulators={"quiet": SimulatorSpec(args.latency_ms)}) as stack,
    ):  # fmt: skip
        api, log = await _connected(stack, http)
        try:
            return await million(
                api, log, stack, contacts=args.million_contacts, campaigns=args.campaigns,
                seconds=args.million_seconds,
            )  # fmt: skip
        finally:
            await log.close()


async def run_webhook_ingestion(
    args: argparse.Namespace, http: aiohttp.ClientSession
) -> dict[str, Any]:
    """benchmarks/webhook_ingestion.py's `run(...)`, when that module exists; given the
    arguments it names among those known here."""
    try:
        module = importlib.import_module("benchmarks.webhook_ingestion")
    except ModuleNotFoundError as exc:
        if exc.name != "benchmarks.webhook_ingestion":
            raise
        return {"skipped": "benchmarks/webhook_ingestion.py does not exist yet"}
    run = module.run
    known = {"database_url": args.database_url, "server_url": args.database_url}
    parameters = inspect.signature(run).parameters
    kwargs = {name: value for name, value in known.items() if name in parameters}
    if inspect.iscoroutinefunction(run):
        figures = await run(**kwargs)
    else:  # it may run its own event loop: not inside this one
        figures = await asyncio.to_thread(run, **kwargs)
    return dict(figures)


RUNNERS: dict[str, Callable[[argparse.Namespace, aiohttp.ClientSession], Awaitable[Any]]] = {
    "pipeline": run_pipeline,
    "webhook-ingestion": run_webhook_ingestion,
    "full-speed": run_full_speed,
    "scale-campaigns": run_scale_campaigns,
    "scale-sockets": run_scale_sockets,
    "million": run_million,
}


def _code_version() -> dict[str, Any]:
    """The commit measured, and whether engine/ or api/ had uncommitted changes."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=root, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        "commit": git("rev-parse", "--short", "HEAD") or None,
        "uncommitted_engine_or_api_changes": bool(git("status", "--porcelain", "engine", "api")),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "config": {
            "scenarios": args.scenarios,
            "recipients": args.recipients,
            "webhook_recipients": args.webhook_recipients,
            "campaigns": args.campaigns,
            "concurrency": args.concurrency,
            "latency_ms": args.latency_ms,
            "rates_per_minute": args.rate_list,
            "rate_seconds": args.rate_seconds,
            "pauses": args.pauses,
            "webhook_door": args.webhook_door,
            "read_share": args.read_share,
            "reply_share": args.reply_share,
        },
        "code": _code_version(),
        "machine": {
            "cpus": psutil.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(terse=True),
        },
    }
    timeout = aiohttp.ClientTimeout(total=300)
    connector = aiohttp.TCPConnector(limit=20)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        for name in args.scenarios:
            started = time.time()
            print(f"benchmarks: {name} ...", file=sys.stderr, flush=True)
            try:
                figures = await RUNNERS[name](args, http)
            except Exception as exc:  # one scenario's failure keeps the others' figures
                traceback.print_exc()
                figures = {"error": f"{type(exc).__name__}: {exc}"}
            if name == "pipeline" and "error" not in figures:
                result.update(figures)  # at the top level, as before
            else:
                result[name.replace("-", "_")] = figures
            seconds = round(time.time() - started, 1)
            result.setdefault("scenario_seconds", {})[name] = seconds
            print(f"benchmarks: {name} done in {seconds} s", file=sys.stderr, flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = asyncio.run(run(args))
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0
