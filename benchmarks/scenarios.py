"""The measured phases. Each takes the running stack and returns plain JSON-able figures."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import aiohttp

from benchmarks.client import (
    Api,
    EventLog,
    histogram,
    histogram_quantile,
    percentile,
    simulator_get,
    simulator_last,
    wait_final,
)
from benchmarks.lag import StatsPoller, summary
from benchmarks.processes import PostgresCpu, Process, Simulator, Stack, sample_rss

LATENCY_METRIC = "campaign_engine_send_latency_seconds"
SLICES = 10  # every contact is in one `slice<k>`: audiences for the rate and pause phases


def contacts(count: int, *, prefix: str, parts: int, part_tag: str) -> Iterator[dict[str, Any]]:
    """`count` contacts; `<part_tag><i % parts>` splits them among the throughput campaigns."""
    for i in range(count):
        yield {
            "phone": f"+1{prefix}{i:07d}1",  # never ends in 0000: the simulator fails those
            "firstName": f"First{i % 1000}",
            "lastName": str(i),
            "tags": [f"{part_tag}{i % parts}", f"slice{i % SLICES}"],
        }


def _mb(value: float) -> float:
    return round(value, 1)


async def throughput(
    api: Api,
    log: EventLog,
    stack: Stack,
    *,
    campaigns: int,
    part_tag: str,
    phone_prefix: str,
    recipients: int,
    simulator: Simulator | None = None,
) -> dict[str, Any]:
    """`campaigns` campaigns at the API's maximum rate, one account each, sharing the
    audience between them; from the first start request to the last completion. Against
    `simulator` (default: the stack's first)."""
    daemon: Process = stack.daemon
    target = simulator or stack.simulator
    api_url = target.api_url
    accounts = [
        await api.account(f"{phone_prefix} {k}", f"{phone_prefix}-{k}", api_url)
        for k in range(campaigns)
    ]
    ids = [
        await api.campaign(accounts[k], f"{phone_prefix} throughput {k}", f"{part_tag}{k}", 60_000)
        for k in range(campaigns)
    ]
    metrics_before = histogram(await api.text("/metrics"), LATENCY_METRIC)
    rss_before = daemon.rss_mb()
    daemon.samples.clear()
    sampler = asyncio.create_task(sample_rss(daemon))
    # What else each message costs on this machine: the scenario's PostgreSQL
    # backends and the simulator share the two cores with the daemon.
    postgres = PostgresCpu(stack.database)
    postgres.start()
    simulator_before = target.process.cpu_seconds()
    cpu_before, started = daemon.cpu_seconds(), time.time()
    try:
        for campaign_id in ids:
            await api.command(campaign_id, "start")
        finished = await wait_final(api, log, ids, within=max(300.0, recipients / 100))
        cpu = daemon.cpu_seconds() - cpu_before
        postgres_cpu = postgres.seconds()
        simulator_cpu = target.process.cpu_seconds() - simulator_before
    finally:
        sampler.cancel()
    seconds = finished - started
    rss_after = daemon.rss_mb()
    final = [await api.get(campaign_id) for campaign_id in ids]
    messages = sum(c["stats"]["sent"] + c["stats"]["failed"] for c in final)
    metrics_after = histogram(await api.text("/metrics"), LATENCY_METRIC)
    p50 = histogram_quantile(metrics_before, metrics_after, 0.50)
    p99 = histogram_quantile(metrics_before, metrics_after, 0.99)
    return {
        "engine": {
            "messages": messages,
            "campaigns": campaigns,
            "statuses": sorted({c["status"] for c in final}),
            "seconds": round(seconds, 2),
            "messages_per_second": round(messages / seconds, 1) if seconds > 0 else 0.0,
            "cpu_seconds_per_1000": round(cpu / messages * 1000, 3) if messages else None,
            "postgres_cpu_seconds_per_1000": (
                round(postgres_cpu / messages * 1000, 3) if messages else None
            ),
            "simulator_cpu_seconds_per_1000": (
                round(simulator_cpu / messages * 1000, 3) if messages else None
            ),
            "peak_rss_mb": _mb(max(daemon.samples, default=rss_after)),
            "send_latency_p50_ms": None if p50 is None else round(p50 * 1000, 1),
            "send_latency_p99_ms": None if p99 is None else round(p99 * 1000, 1),
            "send_latency_source": f"daemon /metrics {LATENCY_METRIC} (bucket-interpolated)",
        },
        "memory": {
            "recipients": recipients,
            "rss_before_mb": _mb(rss_before),
            "rss_peak_mb": _mb(max(daemon.samples, default=rss_after)),
            "rss_after_mb": _mb(rss_after),
        },
    }


async def throughput_with_webhooks(
    api: Api,
    log: EventLog,
    stack: Stack,
    http: aiohttp.ClientSession,
    simulator: Simulator,
    *,
    campaigns: int,
    part_tag: str,
    recipients: int,
    poll_interval: float = 0.05,
) -> dict[str, Any]:
    """`throughput` against a simulator that posts every status in its own signed request,
    as WhatsApp does; then until its backlog is posted and the daemon shows every
    `delivered`. The lag of the first campaign's statuses: see benchmarks/lag.py."""
    phone_prefix = "wh"
    stats_before = await simulator_get(http, simulator.url, "stats")
    cpu_before, started = stack.daemon.cpu_seconds(), time.time()
    poller: StatsPoller | None = None
    poll_task: asyncio.Task[None] | None = None

    async def poll_first_campaign() -> None:
        # The campaign exists only once `throughput` created it: wait for it by name.
        nonlocal poller
        name = f"{phone_prefix} throughput 0"
        while poller is None:
            for _at, campaign in await api.campaigns("running"):
                if campaign["name"] == name:
                    poller = StatsPoller(api, campaign["id"], poll_interval)
            await asyncio.sleep(poll_interval)
        await poller.run()

    poll_task = asyncio.create_task(poll_first_campaign())
    try:
        run = await throughput(
            api, log, stack, campaigns=campaigns, part_tag=part_tag, phone_prefix=phone_prefix,
            recipients=recipients, simulator=simulator,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while (await simulator_get(http, simulator.url, "stats"))["webhook_pending"] > 0:
            if time.monotonic() > deadline:
                raise TimeoutError("the simulator's webhook backlog did not drain")
            await asyncio.sleep(0.1)
        posted_at = time.time()
        if poller is not None:  # until the daemon shows what was posted, bounded
            expected = (await simulator_get(
                http, simulator.url, f"timeline?phone_number_id={phone_prefix}-0&kind=delivered"
            ))["count"]  # fmt: skip
            while poller.samples and poller.samples[-1][1]["delivered"] < expected:
                if time.time() > posted_at + 30:
                    break
                await asyncio.sleep(poll_interval)
        drained = time.time()
        cpu = stack.daemon.cpu_seconds() - cpu_before
    finally:
        poll_task.cancel()
    stats_after = await simulator_get(http, simulator.url, "stats")
    posts = stats_after["webhook_posts"] - stats_before["webhook_posts"]
    items = stats_after["webhook_items"] - stats_before["webhook_items"]
    messages = run["engine"]["messages"]
    lag: dict[str, Any] = {}
    if poller is not None:
        for kind in ("delivered", "read"):
            timeline = await simulator_get(
                http, simulator.url, f"timeline?phone_number_id={phone_prefix}-0&kind={kind}"
            )
            lags, unseen = poller.lags(timeline["points"], kind)
            lag[kind] = summary(lags, unseen, poll_interval)
    engine = run["engine"] | {
        "webhook_requests": posts,
        "webhook_requests_per_message": round(posts / messages, 2) if messages else None,
        "statuses_per_request": round(items / posts, 2) if posts else None,
        "webhook_failures": stats_after["webhook_failures"] - stats_before["webhook_failures"],
        "seconds_until_every_status_applied": round(drained - started, 2),
        "cpu_seconds_per_1000_including_drain": round(cpu / messages * 1000, 3)
        if messages
        else None,
        "webhook_to_api_lag": lag,
        "webhook_door": stack.webhook_door,
    }
    return {"engine": engine, "memory": run["memory"]}


async def bare(stack: Stack, *, requests: int, concurrency: int) -> dict[str, Any]:
    """`benchmarks.bare` in its own process against the same simulator."""
    simulator_before = stack.simulator.process.cpu_seconds()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.bare", "--url", stack.api_url,
        "--phone-number-id", "bare", "--requests", str(requests),
        "--concurrency", str(concurrency),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), timeout=max(300.0, requests / 50))
    if process.returncode != 0:
        raise RuntimeError(f"benchmarks.bare exited with {process.returncode}")
    result: dict[str, Any] = json.loads(out)
    simulator_cpu = stack.simulator.process.cpu_seconds() - simulator_before
    if result.get("messages"):
        result["simulator_cpu_seconds_per_1000"] = round(
            simulator_cpu / result["messages"] * 1000, 3
        )
    result["process"] = "separate (python -m benchmarks.bare); CPU is that process's"
    return result


async def rate_accuracy(
    api: Api,
    log: EventLog,
    stack: Stack,
    http: aiohttp.ClientSession,
    *,
    rates: list[float],
    seconds: float,
    warmup: float = 2.0,
) -> list[dict[str, Any]]:
    """Concurrent campaigns at distinct rates, each on its own account. After `warmup`
    (the token bucket's initial burst), sends are counted over `seconds`: as the simulator
    accepted them, and as the campaign's `stats.sent` over the API."""
    ids: list[str] = []
    phones: list[str] = []
    for k, rate in enumerate(rates):
        phone = f"rate-{k}"
        account = await api.account(f"rate {k}", phone, stack.api_url)
        ids.append(await api.campaign(account, f"rate {rate:g}/min", f"slice{k}", rate))
        phones.append(phone)
    for campaign_id in ids:
        await api.command(campaign_id, "start")
    await asyncio.sleep(warmup)

    async def sample() -> tuple[float, list[int], list[int]]:
        at = time.time()
        counted = [(await simulator_last(http, stack.simulator_url, p))[0] for p in phones]
        sent = [(await api.get(i))["stats"]["sent"] for i in ids]
        return at, counted, sent

    t0, sim0, api0 = await sample()
    await asyncio.sleep(seconds)
    t1, sim1, api1 = await sample()
    for campaign_id in ids:
        await api.command(campaign_id, "cancel")
    elapsed = t1 - t0
    results = []
    for k, rate in enumerate(rates):
        achieved = (sim1[k] - sim0[k]) / elapsed * 60
        results.append(
            {
                "configured_per_minute": rate,
                "achieved_per_minute": round(achieved, 1),
                "error_percent": round((achieved - rate) / rate * 100, 2),
                "achieved_per_minute_from_api_stats": round((api1[k] - api0[k]) / elapsed * 60, 1),
                "window_seconds": round(elapsed, 2),
            }
        )
    return results


async def pause_latency(
    api: Api,
    log: EventLog,
    stack: Stack,
    http: aiohttp.ClientSession,
    *,
    pauses: int,
    sends_between: int = 200,
) -> dict[str, Any]:
    """Pause a campaign running at 1,000/s `pauses` times; each time, from the pause request
    to the last send the simulator accepted for its phone number id (0 when none came after
    the request), and to the `campaign:paused` event."""
    phone = "pause"
    account = await api.account("pause", phone, stack.api_url)
    campaign_id = await api.campaign(account, "pause latency", f"slice{SLICES - 1}", 60_000)
    to_last_send: list[float] = []
    to_event: list[float] = []
    await api.command(campaign_id, "start")
    try:
        for _ in range(pauses):
            baseline, _last = await simulator_last(http, stack.simulator_url, phone)
            deadline = time.monotonic() + 60
            # Polling the simulator, bounded: it has no stream of its own.
            while (await simulator_last(http, stack.simulator_url, phone))[0] < (
                baseline + sends_between
            ):
                if time.monotonic() > deadline:
                    raise TimeoutError("the pause campaign is not sending")
                await asyncio.sleep(0.02)
            events_before = len(log.events[campaign_id])
            requested = time.time()
            await api.command(campaign_id, "pause")
            paused_at = await log.wait_for(
                campaign_id, ("campaign:paused",), after=events_before, within=30
            )
            # In-flight sends may still land: wait until the count holds still for 0.5 s.
            count, last = await simulator_last(http, stack.simulator_url, phone)
            while True:
                await asyncio.sleep(0.5)
                again, last = await simulator_last(http, stack.simulator_url, phone)
                if again == count:
                    break
                count = again
            to_last_send.append(max(0.0, ((last or requested) - requested) * 1000))
            to_event.append((paused_at - requested) * 1000)
            await api.command(campaign_id, "resume")
    finally:
        await api.command(campaign_id, "cancel")

    def summary(values: list[float]) -> dict[str, Any]:
        p50, p99 = percentile(values, 0.50), percentile(values, 0.99)
        return {
            "p50": None if p50 is None else round(p50, 1),
            "p99": None if p99 is None else round(p99, 1),
            "samples": [round(v, 1) for v in values],
        }

    return {
        "pauses": pauses,
        "to_last_send_ms": summary(to_last_send),
        "to_paused_event_ms": summary(to_event),
    }
