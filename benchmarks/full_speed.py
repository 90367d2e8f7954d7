"""One number at full speed: one account at WhatsApp's top throughput (1,000 messages/s),
the simulator answering after 200 ms and posting every status in its own signed request,
the daemon with enough concurrency (rate x latency = 200 requests in flight, and more).

Measured over a window after a warm-up, then the campaign is cancelled: messages/s as the
simulator accepted them, webhook requests/s it posted, the daemon's CPU share (of one
core) and RSS, the simulator's CPU share, the whole machine's CPU use, and the lag from a
status webhook to its count in the API (benchmarks/lag.py).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import psutil

from benchmarks.client import Api, EventLog, histogram, histogram_quantile, simulator_get
from benchmarks.lag import StatsPoller, summary
from benchmarks.processes import PostgresCpu, Stack, sample_rss

PHONE = "full-speed"
LATENCY_METRIC = "campaign_engine_send_latency_seconds"


def audience_size(rate: int, seconds: float, warmup: float) -> int:
    """Enough recipients that the campaign is still sending when the window closes."""
    return int(rate * (seconds + warmup) * 1.15) + 1000


async def full_speed(
    api: Api,
    log: EventLog,
    stack: Stack,
    http: aiohttp.ClientSession,
    *,
    rate: int,
    tag: str,
    seconds: float,
    warmup: float,
    poll_interval: float = 0.05,
) -> dict[str, Any]:
    simulator = stack.simulator
    account = await api.account("full speed", PHONE, simulator.api_url, messages_per_second=rate)
    campaign_id = await api.campaign(account, "full speed", tag, rate * 60)
    daemon, sim = stack.daemon, psutil.Process(simulator.process.pid)
    poller = StatsPoller(api, campaign_id, poll_interval)
    postgres, all_postgres = PostgresCpu(stack.database), PostgresCpu()

    async def sample() -> dict[str, Any]:
        stats = await simulator_get(http, simulator.url, "stats")
        last = await simulator_get(http, simulator.url, f"last?phone_number_id={PHONE}")
        sim_times = sim.cpu_times()
        return {
            "at": time.time(),
            "accepted": last["accepted"],
            "posts": stats["webhook_posts"],
            "pending": stats["webhook_pending"],
            "daemon_cpu": daemon.cpu_seconds(),
            "simulator_cpu": sim_times.user + sim_times.system,
        }

    metrics_before = histogram(await api.text("/metrics"), LATENCY_METRIC)
    daemon.samples.clear()
    await api.command(campaign_id, "start")
    tasks = [asyncio.create_task(poller.run()), asyncio.create_task(sample_rss(daemon))]
    try:
        await asyncio.sleep(warmup)
        psutil.cpu_percent()  # starts the machine-wide measurement
        first = await sample()
        postgres.start()
        all_postgres.start()
        await asyncio.sleep(seconds)
        last = await sample()
        postgres_cpu, all_postgres_cpu = postgres.seconds(), all_postgres.seconds()
        machine = psutil.cpu_percent()
        status = (await api.get(campaign_id))["status"]
        await api.command(campaign_id, "cancel")
    finally:
        for task in tasks:
            task.cancel()
    metrics_after = histogram(await api.text("/metrics"), LATENCY_METRIC)
    elapsed = last["at"] - first["at"]
    lag = {}
    for kind in ("delivered", "read"):
        timeline = await simulator_get(
            http, simulator.url, f"timeline?phone_number_id={PHONE}&kind={kind}"
        )
        window = [p for p in timeline["points"] if first["at"] <= p[1] <= last["at"]]
        lags, unseen = poller.lags(window, kind)
        lag[kind] = summary(lags, unseen, poll_interval)
    p50 = histogram_quantile(metrics_before, metrics_after, 0.50)
    p99 = histogram_quantile(metrics_before, metrics_after, 0.99)
    return {
        "configured_messages_per_second": rate,
        "window_seconds": round(elapsed, 2),
        "warmup_seconds": warmup,
        "status_at_end_of_window": status,
        "messages_per_second": round((last["accepted"] - first["accepted"]) / elapsed, 1),
        "webhook_requests_per_second": round((last["posts"] - first["posts"]) / elapsed, 1),
        # Statuses due or overdue in the simulator at the end: growing means it fell behind.
        "simulator_webhook_backlog": {"start": first["pending"], "end": last["pending"]},
        "daemon_cpu_percent_of_one_core": round(
            (last["daemon_cpu"] - first["daemon_cpu"]) / elapsed * 100, 1
        ),
        "simulator_cpu_percent_of_one_core": round(
            (last["simulator_cpu"] - first["simulator_cpu"]) / elapsed * 100, 1
        ),
        # The backends serving this scenario's database, and all of PostgreSQL.
        "postgres_cpu_percent_of_one_core": round(postgres_cpu / elapsed * 100, 1),
        "all_postgres_cpu_percent_of_one_core": round(all_postgres_cpu / elapsed * 100, 1),
        "machine_cpu_percent_of_all_cores": machine,
        "daemon_cpu_ms_per_message": round(
            (last["daemon_cpu"] - first["daemon_cpu"])
            / max(1, last["accepted"] - first["accepted"])
            * 1000,
            3,
        ),
        "daemon_rss_peak_mb": round(max(daemon.samples, default=daemon.rss_mb()), 1),
        "send_latency_p50_ms": None if p50 is None else round(p50 * 1000, 1),
        "send_latency_p99_ms": None if p99 is None else round(p99 * 1000, 1),
        "webhook_to_api_lag": lag,
        "webhook_door": stack.webhook_door,
    }
