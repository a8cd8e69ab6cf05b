"""settle_heap, in a process of its own (it freezes the whole process's heap): start-up's
objects leave the collector's walks, and a cycle made afterwards is still collected."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

SCRIPT = """
import gc
from udpchat.memory import settle_heap
import udpchat.relay_server  # a relay's start-up
settle_heap()
frozen = gc.get_freeze_count()
class Node:
    pass
a, b = Node(), Node()
a.other, b.other = b, a
del a, b
print(frozen, gc.collect())
"""


def test_settle_heap_freezes_start_up_and_later_cycles_are_still_collected() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    frozen, collected = int(out[0]), int(out[1])
    assert frozen > 1000  # modules, classes, functions: thousands of objects
    assert collected >= 2  # the two nodes of the cycle (and their dicts)
