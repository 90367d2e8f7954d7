"""What a hung test was waiting for.

pytest-timeout (configured in pyproject.toml) ends a run whose test hangs, but
its stack dump shows only threads, and a hung trio test's one thread sits in
the scheduler. A little before that timeout this prints every trio task and
asyncio task of the process with the await chain it is stuck in.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

# Seconds before pytest-timeout's own limit that the report is printed.
_AHEAD_OF_TIMEOUT = 20.0


def _await_chain(coroutine: Any) -> Iterator[str]:
    while coroutine is not None:
        frame = getattr(coroutine, "cr_frame", None) or getattr(coroutine, "ag_frame", None)
        if frame is not None:
            yield f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
        coroutine = (
            getattr(coroutine, "cr_await", None)
            or getattr(coroutine, "ag_await", None)
            or getattr(coroutine, "gi_yieldfrom", None)
        )


def _report(test_id: str) -> None:
    from trio._core._run import Runner  # private, but this only reads it

    out = sys.stderr
    print(f"\n=== {test_id} still runs; its tasks:", file=out)
    for found in gc.get_objects():
        if isinstance(found, Runner):
            for task in list(found.tasks):
                print(f"--- trio task {task.name}", file=out)
                for line in _await_chain(task.coro):
                    print(f"      {line}", file=out)
        elif isinstance(found, asyncio.Task) and not found.done():
            print(f"--- asyncio task {found.get_name()}", file=out)
            found.print_stack(file=out)
    out.flush()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    # The whole protocol, as pytest-timeout times it: a fixture's teardown can hang too.
    timeout = float(item.config.getini("timeout") or 0)
    timer = None
    if timeout > _AHEAD_OF_TIMEOUT:
        timer = threading.Timer(timeout - _AHEAD_OF_TIMEOUT, _report, args=(item.nodeid,))
        timer.daemon = True
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.cancel()
