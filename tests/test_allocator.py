"""`configure_allocator` (engine/daemon.py): freed large blocks go back to the system.

Each case runs in a fresh interpreter, so that this process's allocator is left alone
and glibc's thresholds start from their defaults.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

_HOLDING = r"""
import ctypes, sys
from engine.daemon import configure_allocator

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "configured":
    assert configure_allocator()
body = bytearray(4 << 20)
del body  # as after a first large request: glibc would raise its threshold to 4 MiB
blocks, pins = [], []
for _ in range(32):  # 1 MiB bodies, each followed by a block that stays (64 KiB: too
    blocks.append(bytearray(1 << 20))  # large for the gaps imports leave in the heap)
    pins.append(bytearray(64 << 10))
del blocks
print(libc.mallinfo2().fordblks)  # bytes freed but still held by the process
"""


def _held_after_freeing(mode: str, **environment: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | environment
    done = subprocess.run(
        [sys.executable, "-c", _HOLDING, mode],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        timeout=60,
    )
    return int(done.stdout.strip())


def _glibc_with_mallinfo2() -> bool:
    try:
        ctypes.CDLL(None).mallinfo2  # noqa: B018
    except AttributeError:
        return False
    return True


pytestmark = pytest.mark.skipif(not _glibc_with_mallinfo2(), reason="glibc 2.33+ only")


def test_freed_bodies_are_given_back_once_configured() -> None:
    # The comparison shows what the setting changes: 32 MiB kept between the pins.
    assert _held_after_freeing("default") >= 30 << 20
    assert _held_after_freeing("configured") < 2 << 20


def test_the_environment_keeps_its_own_setting() -> None:
    code = "from engine.daemon import configure_allocator; print(configure_allocator())"
    env = os.environ | {"MALLOC_TRIM_THRESHOLD_": "1048576"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert done.stdout.strip() == "False"
