"""`configure_collector` (engine/daemon.py): start-up's objects are left out of every
collection, and the young generation is collected less often. In a fresh interpreter,
so this process's collector keeps its defaults."""

from __future__ import annotations

import subprocess
import sys

_PROBE = r"""
import gc, sys
from engine.daemon import configure_collector

before = gc.get_count(), gc.get_threshold()
configure_collector()
frozen = gc.get_freeze_count()
threshold = gc.get_threshold()
# A cycle made afterwards is garbage like any other: still collected.
class Node: pass
a, b = Node(), Node()
a.other, b.other = b, a
del a, b
print(frozen, threshold[0], threshold[1:] == before[1][1:], gc.collect() >= 2)
"""


def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=60
    )
    frozen, young, older_unchanged, cycles_collected = result.stdout.split()
    assert int(frozen) > 10_000  # the modules, classes and functions the daemon imported
    assert int(young) == 10_000 and older_unchanged == "True"
    assert cycles_collected == "True"
