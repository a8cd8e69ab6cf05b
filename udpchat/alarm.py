"""A wake-up at a given time for a thread waiting on file descriptors (Linux's timerfd).

A thread that acts on the endpoint while the driver's thread waits may move the endpoint's
next timer earlier (a chat line starts a retransmission timer). Waking the waiting thread at
once costs a whole turn that does nothing but compute its wait again, on every line; and
the answer to the line (its acknowledgement) usually wakes that thread anyway, well before
the timer. An alarm instead makes the wait end at the timer, without a wake-up until then:
one system call, no thread switch.

Invariant: an armed alarm makes its file descriptor readable at ``when`` (``time.monotonic``,
which is CLOCK_MONOTONIC on Linux) or at once when that has passed; arming again replaces the
previous time; ``disarm`` (or ``clear`` once it fired) makes it unreadable until it fires
again. ``Alarm.create()`` is None
where the system has no timerfd (the caller then wakes the thread at once instead).
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import sys
import weakref
from collections.abc import Callable

__all__ = ["Alarm"]

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC  # timerfd.h: TFD_CLOEXEC is O_CLOEXEC
_TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class Alarm:
    """A timerfd: readable from the time it was armed for. Not thread-safe: its owner
    serialises ``arm``, ``clear`` and ``close``."""

    def __init__(self, fd: int, settime: Callable[..., int]) -> None:
        self._fd = fd
        self._settime = settime
        self._spec = _Itimerspec()  # reused: arming allocates nothing
        # Closed by ``close``, or when the alarm is collected (an owner that never closed it).
        self._closer = weakref.finalize(self, os.close, fd)

    @classmethod
    def create(cls) -> Alarm | None:
        """An alarm, or None where the system has none."""
        calls = _timerfd_calls()
        if calls is None:
            return None
        create, settime = calls
        fd = create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
        return None if fd < 0 else cls(fd, settime)

    def fileno(self) -> int:
        return self._fd

    def arm(self, when: float) -> bool:
        """Fire at ``when`` (monotonic seconds; at once if past); False if the system refused."""
        value = self._spec.it_value
        when = max(when, 0.0)  # ASAP (-inf) and anything past: at once
        seconds = int(when)
        nanos = int((when - seconds) * 1e9)
        value.tv_sec = seconds
        value.tv_nsec = nanos if seconds or nanos else 1  # all zero would disarm it
        return self._settime(self._fd, _TFD_TIMER_ABSTIME, ctypes.byref(self._spec), None) == 0

    def disarm(self) -> bool:
        """Never fire (until armed again), and be unreadable now even if it fired."""
        value = self._spec.it_value
        value.tv_sec = value.tv_nsec = 0
        return self._settime(self._fd, 0, ctypes.byref(self._spec), None) == 0

    def clear(self) -> None:
        """Make the descriptor unreadable until the alarm fires again (after it fired)."""
        with contextlib.suppress(BlockingIOError, InterruptedError):
            os.read(self._fd, 8)

    def close(self) -> None:
        self._closer()  # once: later calls do nothing


@functools.cache
def _timerfd_calls() -> tuple[Callable[..., int], Callable[..., int]] | None:
    """libc's timerfd_create and timerfd_settime, looked up once (None where there are none).
    The process's own symbols hold libc's on Linux: no library search (find_library runs
    ldconfig in a subprocess)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        create, settime = libc.timerfd_create, libc.timerfd_settime
    except (OSError, AttributeError):
        return None
    create.argtypes = [ctypes.c_int, ctypes.c_int]
    create.restype = ctypes.c_int
    settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    settime.restype = ctypes.c_int
    return create, settime
