"""Giving freed memory back to the system, for a long-running relay.

Python frees objects at once, but the C allocator keeps what it got from the system for
reuse: glibc returns free memory only from the top of a heap, or from blocks large enough to
have been mapped on their own, unless ``malloc_trim`` asks it to release the rest. After many
sessions that held a lot of received data go away, the relay calls ``give_back_free_memory``
so that its resident memory falls back to what it holds, not what it once held. Elsewhere
(another C library, another system) this is a no-op.

``settle_heap``, for a process that is a relay (the ``udpchat relay`` command), once it is
built and before it serves: most of the objects Python's cycle collector tracks were made
then (modules, classes, the configuration: about 37,000 in a relay) and live as long as the
process, yet a full (generation 2) collection walks them all, stopping the relay for tens of
milliseconds while a large room joins. Frozen, they are left out of every collection.
"""

from __future__ import annotations

import ctypes
import gc
import sys
from collections.abc import Callable

__all__ = ["give_back_free_memory", "settle_heap"]


def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        process = ctypes.CDLL(None)  # the symbols already loaded, the C library's among them
    except OSError:
        return None
    trim = getattr(process, "malloc_trim", None)  # glibc only; musl has none
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


_TRIM = _malloc_trim()


def give_back_free_memory() -> None:
    """Ask the C allocator to return the free memory it keeps to the system."""
    if _TRIM is not None:
        _TRIM(0)


def settle_heap() -> None:
    """Collect what start-up left, then freeze the rest out of later collections (for the
    process's owner only: a frozen object that becomes part of a garbage cycle stays)."""
    gc.collect()
    gc.freeze()
