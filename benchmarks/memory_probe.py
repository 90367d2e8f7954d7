"""Where the daemon's memory goes during a contact import.

    .venv/bin/python -m benchmarks.memory_probe --rounds 30 --batch 10000
    .venv/bin/python -m benchmarks.memory_probe --inspect    # + tracemalloc, gc, malloc figures
    .venv/bin/python -m benchmarks.memory_probe --env MALLOC_ARENA_MAX=2

Starts a daemon on a fresh database (benchmarks/processes.py), posts `--rounds` requests
of `--batch` new contacts each (`POST /api/v1/contacts`, as the million scenario does) and
after each one records the daemon's RSS and /proc/PID/smaps_rollup (anonymous vs file
backed). The JSON printed at the end has every round, and the growth per imported contact
between the first `--warmup` rounds and the last one.

`--inspect` starts the daemon with an inspection hook: a `sitecustomize` module, written
to a scratch directory put on the daemon's PYTHONPATH (nothing in the daemon's code
changes), runs a thread that answers the probe through files in that directory:
tracemalloc snapshots diffed between rounds, counts of live objects by type, glibc's
mallinfo2 (bytes in use vs held free by the allocator) and what `malloc_trim(0)` gives
back. Tracemalloc slows the daemon: compare RSS figures only between runs without it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.client import Api
from benchmarks.processes import fresh_database, running_stack

# The daemon-side half of --inspect. Requests are files `<n>.req` holding one action;
# the answer is written to `<n>.json`.
_HOOK = r"""
import collections, ctypes, gc, json, os, pathlib, threading, time, tracemalloc

_DIR = pathlib.Path(os.environ["MEMORY_PROBE_DIR"])
_SNAPSHOTS = {}


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _MallInfo2


def _rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _mallinfo():
    m = _libc.mallinfo2()
    return {"arena": m.arena, "mmap": m.hblkhd, "in_use": m.uordblks, "free": m.fordblks}


def _label(obj):
    kind = type(obj).__qualname__
    if isinstance(obj, dict):
        return kind + "{" + ", ".join(map(str, list(obj)[:8])) + "}"
    if isinstance(obj, (list, tuple, set)):
        return f"{kind}[{len(obj)}: " + ", ".join(type(i).__name__ for i in list(obj)[:4]) + "]"
    if kind == "frame":
        return f"frame {obj.f_code.co_filename}:{obj.f_lineno} {obj.f_code.co_name}"
    if kind == "cell":
        return "cell"
    return f"{type(obj).__module__}.{kind}"


def _handle(action):
    name, _, arg = action.partition(":")
    if name == "trace":
        tracemalloc.start(int(arg))
        return {}
    if name == "snap":
        gc.collect()
        _SNAPSHOTS[arg] = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)])
        return {"traced": tracemalloc.get_traced_memory()[0]}
    if name == "diff":
        before, after = arg.split(",")
        stats = _SNAPSHOTS[after].compare_to(_SNAPSHOTS[before], "traceback")
        out = []
        for stat in stats[:12]:
            out.append({"size_diff": stat.size_diff, "count_diff": stat.count_diff,
                        "where": [f"{fr.filename}:{fr.lineno}" for fr in stat.traceback][-6:]})
        return out
    if name == "types":
        gc.collect()
        counts = collections.Counter(type(o).__name__ for o in gc.get_objects())
        return {"objects": sum(counts.values()), "top": counts.most_common(15)}
    if name == "holders":
        # Who keeps instances of a class alive: for a few of them, the chain of first
        # referrers (by type) from the instance up, skipping the hook's own lists.
        gc.collect()
        found = [o for o in gc.get_objects() if type(o).__name__ == arg]
        sample = found[:3]
        mine = {id(found), id(sample)}
        chains = []
        for obj in sample:
            chain, current, seen = [], obj, {id(obj)}
            for _ in range(10):
                referrers = gc.get_referrers(current)
                mine.add(id(referrers))
                others = [r for r in referrers if id(r) not in mine and id(r) not in seen
                          and not (type(r).__name__ == "frame" and r.f_code is _handle.__code__)]
                mine.add(id(others))
                if not others:
                    chain.append("(nothing else)")
                    break
                current = others[0]
                seen.add(id(current))
                chain.append(" | ".join(_label(r) for r in others[:4]))
            chains.append(chain)
        return {"instances": len(found), "chains": chains}
    if name == "timers":
        # trio-asyncio's loop keeps its timers in `_timers`; a cancelled one stays
        # there until it is due, holding the contextvars.Context it was made in.
        import asyncio
        loops = [o for o in gc.get_objects() if type(o).__name__ == "TrioEventLoop"]
        out = []
        for loop in loops:
            timers = list(getattr(loop, "_timers", []))
            now = loop.time()
            live = collections.Counter(
                getattr(t._callback, "__qualname__", repr(t._callback)) for t in timers
                if not t._cancelled)
            request_contexts = sum(
                1 for t in timers
                if t._context is not None and any(
                    type(v).__name__ == "RequestContext" for v in t._context.values()))
            out.append({"timers": len(timers),
                        "cancelled": sum(1 for t in timers if t._cancelled),
                        "holding_a_request_context": request_contexts,
                        "due_in_s": sorted(round(t._when - now) for t in timers)[-5:],
                        "live_callbacks": live.most_common(6)})
        return out
    if name == "big":
        # Buffers over `arg` bytes (bytes, bytearray, str are not tracked by gc: found
        # through the tracked objects that refer to them) and what holds each.
        gc.collect()
        least, held = int(arg), []
        for holder in gc.get_objects():
            for item in gc.get_referents(holder):
                if isinstance(item, (bytes, bytearray, str)) and len(item) >= least:
                    label = type(holder).__qualname__
                    if isinstance(holder, dict):
                        key = next((repr(k) for k, v in holder.items() if v is item), "?")
                        label += f"[{key}]"
                    held.append({"type": type(item).__name__, "len": len(item), "holder": label,
                                 "holder_id": id(holder)})
        return held
    if name == "malloc":
        return {"rss": _rss(), **_mallinfo()}
    if name == "trim":
        before = {"rss": _rss(), **_mallinfo()}
        started = time.perf_counter()
        _libc.malloc_trim(0)
        return {"before": before, "after": {"rss": _rss(), **_mallinfo()},
                "trim_ms": round((time.perf_counter() - started) * 1000, 2)}
    return {"error": f"unknown action {action!r}"}


def _serve():
    while True:
        for request in sorted(_DIR.glob("*.req")):
            try:
                answer = _handle(request.read_text())
            except Exception as error:
                answer = {"error": repr(error)}
            done = request.with_suffix(".tmp")
            done.write_text(json.dumps(answer))
            done.rename(request.with_suffix(".json"))
            request.unlink()
        time.sleep(0.02)


threading.Thread(target=_serve, name="memory-probe", daemon=True).start()
"""


class Hook:
    """The probe's side of the inspection hook."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._sequence = 0

    async def ask(self, action: str, within: float = 120.0) -> Any:
        self._sequence += 1
        request = self.directory / f"{self._sequence:06d}.req"
        # Written whole, then renamed: the hook never reads a half-written request.
        request.with_suffix(".new").write_text(action)
        request.with_suffix(".new").rename(request)
        answer = request.with_suffix(".json")
        deadline = time.monotonic() + within
        while not answer.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"the daemon's hook did not answer {action!r}")
            await asyncio.sleep(0.05)
        return json.loads(answer.read_text())


def smaps_rollup(pid: int) -> dict[str, float]:
    """MB: total RSS, anonymous, file backed (from /proc/PID/smaps_rollup)."""
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value) / 1024
    return {
        "rss_mb": round(fields["Rss"], 1),
        "anon_mb": round(fields["Anonymous"], 1),
        "file_mb": round(fields["Rss"] - fields["Anonymous"], 1),
    }


def contacts(start: int, count: int) -> list[dict[str, Any]]:
    # The million scenario's contacts (benchmarks/scale.py, million_contacts).
    return [
        {"phone": f"+1666{i:07d}1", "firstName": f"M{i % 1000}", "lastName": str(i),
         "tags": [f"million{i % 4}"]}
        for i in range(start, start + count)
    ]  # fmt: skip


async def probe(args: argparse.Namespace) -> dict[str, Any]:
    env = dict(item.split("=", 1) for item in args.env)
    hook: Hook | None = None
    scratch = Path(tempfile.mkdtemp(prefix="memory-probe-"))
    if args.inspect:
        (scratch / "sitecustomize.py").write_text(_HOOK)
        env |= {
            "PYTHONPATH": os.pathsep.join([str(scratch), *sys.path[1:]]),
            "MEMORY_PROBE_DIR": str(scratch),
        }
        hook = Hook(scratch)
    rounds: list[dict[str, Any]] = []
    inspection: dict[str, Any] = {}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http,
        fresh_database(args.database_url) as dsn,
        running_stack(dsn, concurrency=50, http=http, simulators={}, daemon_env=env) as stack,
    ):  # fmt: skip
        api = Api(http, stack.daemon_url, stack.jwt_secret, "probe")
        pid = stack.daemon.pid
        await api.call("GET", "/contacts?limit=1")  # warm the routes up
        idle = smaps_rollup(pid)
        if hook is not None:
            inspection["idle_malloc"] = await hook.ask("malloc")
            if args.trace_frames:
                # Traced from the start, so that a one-time cost shows up as that.
                await hook.ask(f"trace:{args.trace_frames}")
        for round_number in range(1, args.rounds + 1):
            batch = contacts((round_number - 1) * args.batch, args.batch)
            started = time.perf_counter()
            result = await api.call("POST", "/contacts", {"contacts": batch})
            seconds = time.perf_counter() - started
            assert result["created"] == args.batch, result
            figures: dict[str, Any] = {"round": round_number, "seconds": round(seconds, 2)}
            if hook is not None and args.trim_each_round:
                figures["trim"] = await hook.ask("trim")
            figures |= smaps_rollup(pid)
            if hook is not None:
                figures["malloc"] = await hook.ask("malloc")
                if args.trace_frames and round_number in (args.warmup, args.rounds):
                    await hook.ask(f"snap:{round_number}")
            rounds.append(figures)
            print(json.dumps(figures), file=sys.stderr)
        await asyncio.sleep(args.settle)
        settled = smaps_rollup(pid)
        if hook is not None:
            if args.trace_frames:
                inspection["diff_warmup_to_last"] = await hook.ask(
                    f"diff:{args.warmup},{args.rounds}"
                )
            inspection["types"] = await hook.ask("types")
            inspection["timers"] = await hook.ask("timers")
            inspection["big"] = await hook.ask("big:100000")
            inspection["requests_alive"] = await hook.ask("holders:TrioRequest")
            inspection["bodies_alive"] = await hook.ask("holders:TrioBody")
            inspection["trim"] = await hook.ask("trim")
            inspection["after_trim"] = smaps_rollup(pid)
    first, last = rounds[args.warmup - 1], rounds[-1]
    imported = (last["round"] - first["round"]) * args.batch
    return {
        "batch": args.batch,
        "rounds": args.rounds,
        "env": env if not args.inspect else {**env, "PYTHONPATH": "<hook>"},
        "idle": idle,
        "after_last_round": {k: last[k] for k in ("rss_mb", "anon_mb", "file_mb")},
        "settled": settled,
        "growth_bytes_per_contact_after_warmup": round(
            (last["rss_mb"] - first["rss_mb"]) * 2**20 / imported, 1
        )
        if imported
        else None,
        "anon_growth_bytes_per_contact_after_warmup": round(
            (last["anon_mb"] - first["anon_mb"]) * 2**20 / imported, 1
        )
        if imported
        else None,
        "inspection": inspection,
        "per_round": rounds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.memory_probe",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--rounds", type=int, default=30, help="requests posted (default 30)")
    parser.add_argument("--batch", type=int, default=10_000, help="contacts per request")
    parser.add_argument("--warmup", type=int, default=3, help="rounds before growth is measured")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds idle at the end")
    parser.add_argument("--inspect", action="store_true", help="the daemon-side hook (slow)")
    parser.add_argument("--trace-frames", type=int, default=8,
                        help="tracemalloc frames kept (0: no tracemalloc)")  # fmt: skip
    parser.add_argument("--trim-each-round", action="store_true",
                        help="with --inspect: malloc_trim(0) after each request")  # fmt: skip
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the daemon (repeatable)")  # fmt: skip
    parser.add_argument(
        "--database-url",
        default=os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/"),
    )
    args = parser.parse_args()
    if not 1 <= args.warmup < args.rounds:
        parser.error("--warmup must be at least 1 and less than --rounds")
    print(json.dumps(asyncio.run(probe(args)), indent=2))


if __name__ == "__main__":
    main()
