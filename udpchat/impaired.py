"""A transport whose datagrams, both ways, cross a simulated bad network (``udpchat.impair``).

Each direction has its own seeded :class:`~udpchat.impair.Impairment`, so a run is
reproducible; delayed outbound datagrams are released by a scheduler thread of its own, so
they leave on time even when nobody is receiving.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import TYPE_CHECKING

from udpchat.endpoint import Address
from udpchat.impair import Impairment, ImpairmentConfig, ImpairmentCounters

if TYPE_CHECKING:
    from udpchat.transport import DatagramTransport

__all__ = ["ImpairedTransport"]


class ImpairedTransport:
    """Wraps a transport so what it sends and what it receives cross a simulated bad network.

    Each direction has its own :class:`Impairment` with a seed derived from the config's,
    so a run is reproducible. Delayed outbound datagrams are released by one scheduler
    thread, so they leave on time even when nobody is receiving.
    """

    def __init__(self, inner: DatagramTransport, config: ImpairmentConfig) -> None:
        self._inner = inner
        self._out: Impairment[Address] = Impairment(config.derive("out"))
        self._in: Impairment[Address] = Impairment(config.derive("in"))
        self._ready: deque[tuple[bytes, Address]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._woken = False
        self._thread = threading.Thread(target=self._release_loop, name="impair-out", daemon=True)
        self._thread.start()

    @property
    def local_address(self) -> Address:
        return self._inner.local_address

    @property
    def outbound(self) -> ImpairmentCounters:
        return self._out.counters

    @property
    def inbound(self) -> ImpairmentCounters:
        return self._in.counters

    def sendto(self, data: bytes, addr: Address) -> None:
        with self._cond:
            if self._closed:
                return
            now = time.monotonic()
            self._out.submit(data, now, addr)
            for item, dest in self._out.due(now):  # undelayed: send now, in order
                self._inner.sendto(item, dest)
            if self._out.next_deadline() is not None:
                self._cond.notify()

    def recvfrom(self, timeout: float | None) -> tuple[bytes, Address] | None:
        """Next datagram released by the inbound impairment, within ``timeout`` overall."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._closed:
            now = time.monotonic()
            self._ready.extend(self._in.due(now))
            if self._ready:
                return self._ready.popleft()
            waits = [t - now for t in (deadline, self._in.next_deadline()) if t is not None]
            wait = max(0.0, min(waits)) if waits else None
            got = self._inner.recvfrom(wait)
            if got is not None:
                self._in.submit(got[0], time.monotonic(), got[1])
            elif self._woken:
                self._woken = False
                return None
            elif wait is None:
                return None  # the inner transport was closed
            elif deadline is not None and time.monotonic() >= deadline:
                released = self._in.due(time.monotonic())
                self._ready.extend(released[1:])
                return released[0] if released else None
        return None

    def wake(self) -> None:
        self._woken = True
        self._inner.wake()

    def close(self) -> None:
        """Stop the scheduler (datagrams still in flight are lost) and close the inner transport."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        self._inner.close()

    def _release_loop(self) -> None:
        with self._cond:
            while not self._closed:
                deadline = self._out.next_deadline()
                if deadline is None:
                    self._cond.wait()
                    continue
                now = time.monotonic()
                if deadline > now:
                    self._cond.wait(deadline - now)
                    continue
                for item, dest in self._out.due(now):
                    self._inner.sendto(item, dest)
