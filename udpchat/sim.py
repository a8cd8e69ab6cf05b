"""A simulated datagram network with a virtual clock, for tests, demos and teaching.

Sans-I/O protocol objects (links, relay and client cores) are plugged in as nodes; the
network moves their datagrams with seeded loss, duplication, reordering and delay, and jumps
the clock straight to the next arrival or timer, so an hour of lossy chat runs in
milliseconds and every run with the same seed is identical.

What a path does to a datagram is decided by udpchat.impair, the model the real-socket
tools use too: each direction of each path has an ``Impairment`` of its own, seeded from
the network's seed and the two addresses, so adding traffic on one path does not change
the fate of datagrams on another. The network keeps one queue of datagrams in flight.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from udpchat.endpoint import Address, Endpoint
from udpchat.impair import Impairment, ImpairmentConfig

__all__ = ["REORDER_HOLD", "NetworkStats", "Node", "PathModel", "PathSpec", "SimNetwork"]

# What the simulator needs from a node: any sans-I/O endpoint.
Node = Endpoint


@dataclass(frozen=True)
class PathModel:
    """How one direction of a path treats datagrams: probabilities and seconds.

    A shorthand for an ``ImpairmentConfig`` (:meth:`impairment`) with the simulator's
    defaults: a small delay, so that time moves, and jitter added on top of it (each
    datagram takes between ``delay`` and ``delay + jitter``). A reordered datagram is held
    back by a further two path delays plus 2.5 ms, so that those sent just after it
    overtake it.
    """

    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    delay: float = 0.0005
    jitter: float = 0.0

    def __post_init__(self) -> None:
        for name in ("loss", "duplicate", "reorder"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.delay < 0 or self.jitter < 0:
            raise ValueError("delay and jitter must not be negative")

    def impairment(self) -> ImpairmentConfig:
        """The same path in udpchat.impair's terms (its seed is the network's to choose)."""
        return ImpairmentConfig(
            loss=self.loss,
            duplicate=self.duplicate,
            reorder=self.reorder,
            reorder_delay=2 * self.delay + REORDER_HOLD,
            # impair draws jitter in [-jitter, +jitter] around the delay
            delay=self.delay + self.jitter / 2,
            jitter=self.jitter / 2,
        )


# What a reordered datagram waits on top of two path delays (see PathModel).
REORDER_HOLD = 0.0025
# A path is described either way; a PathModel is turned into an ImpairmentConfig.
PathSpec = PathModel | ImpairmentConfig


@dataclass
class NetworkStats:
    sent: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    delivered: int = 0
    undeliverable: int = 0
    bytes_sent: int = 0


@dataclass(order=True)
class _InFlight:
    arrival: float
    order: int
    src: Address = field(compare=False)
    dst: Address = field(compare=False)
    data: bytes = field(compare=False)


class SimNetwork:
    """Routes datagrams between attached nodes on a virtual clock."""

    def __init__(self, seed: int = 0, default: PathSpec | None = None, start: float = 0.0):
        self.now = start
        self.stats = NetworkStats()
        self._seed = seed
        self._default = _config(default or PathModel())
        self._paths: dict[tuple[Address, Address], ImpairmentConfig] = {}
        self._impairments: dict[tuple[Address, Address], Impairment[None]] = {}
        self._nodes: dict[Address, Node] = {}
        self._queue: list[_InFlight] = []
        self._order = 0
        self.taps: list[Callable[[Address, Address, bytes], None]] = []

    # --- topology ---------------------------------------------------------------------------

    def attach(self, addr: Address, node: Node) -> None:
        self._nodes[addr] = node

    def detach(self, addr: Address) -> None:
        self._nodes.pop(addr, None)

    def move(self, old: Address, new: Address) -> None:
        """Give a node a new address, as a NAT rebinding does."""
        self._nodes[new] = self._nodes.pop(old)

    def set_default(self, model: PathSpec) -> None:
        """Every path behaves as ``model`` from now on (paths set one by one are forgotten)."""
        self._default = _config(model)
        self._paths.clear()

    def set_path(self, src: Address, dst: Address, model: PathSpec) -> None:
        self._paths[(src, dst)] = _config(model)

    def inject(self, src: Address, dst: Address, data: bytes, delay: float = 0.0) -> None:
        """Put a datagram on the wire as if ``src`` had sent it (spoofing included)."""
        self._schedule(src, dst, data, self.now + delay)

    # --- running ----------------------------------------------------------------------------

    def idle(self) -> bool:
        return not self._queue

    def step(self) -> bool:
        """Flush every node, then advance to and process the next event; False when none."""
        self._flush()
        when = self._next_event_time()
        if when is None:
            return False
        self._advance(when)
        return True

    def run(self, duration: float, max_steps: int = 1_000_000) -> None:
        """Run for ``duration`` virtual seconds (bounded by ``max_steps`` events)."""
        end = self.now + duration
        for _ in range(max_steps):
            self._flush()
            when = self._next_event_time()
            if when is None or when > end:
                self.now = end
                return
            self._advance(when)
        raise RuntimeError(f"simulation did not settle within {max_steps} steps")

    def run_until(
        self, done: Callable[[], bool], timeout: float, max_steps: int = 1_000_000
    ) -> bool:
        """Run until ``done()`` holds (True) or ``timeout`` virtual seconds pass (False)."""
        end = self.now + timeout
        for _ in range(max_steps):
            if done():
                return True
            self._flush()
            when = self._next_event_time()
            if when is None or when > end:
                self.now = max(self.now, end)
                return done()
            self._advance(when)
        raise RuntimeError(f"simulation did not settle within {max_steps} steps")

    def _advance(self, when: float) -> None:
        """Move the clock to ``when`` (never back), deliver what has arrived by then, run
        the timers that are due, and flush what that produced."""
        self.now = max(self.now, when)
        while self._queue and self._queue[0].arrival <= self.now:
            item = heapq.heappop(self._queue)
            node = self._nodes.get(item.dst)
            if node is None:
                self.stats.undeliverable += 1
                continue
            self.stats.delivered += 1
            node.receive_datagram(item.data, item.src, self.now)
        for node in list(self._nodes.values()):
            deadline = node.next_timer()
            if deadline is not None and deadline <= self.now:
                node.handle_timer(self.now)
        self._flush()

    def _next_event_time(self) -> float | None:
        """The next arrival or timer (a timer already due counts as now); None when none."""
        now = self.now
        best = self._queue[0].arrival if self._queue else None
        for node in self._nodes.values():
            deadline = node.next_timer()
            if deadline is not None:
                deadline = max(deadline, now)
                if best is None or deadline < best:
                    best = deadline
        return best

    def _flush(self) -> None:
        for addr, node in list(self._nodes.items()):
            for data, dst in node.datagrams_to_send(self.now):
                self.send(addr, dst, data)

    def send(self, src: Address, dst: Address, data: bytes) -> None:
        """Apply the path's impairment to one datagram from ``src`` to ``dst``."""
        path = (src, dst)
        self.stats.sent += 1
        self.stats.bytes_sent += len(data)
        for tap in self.taps:
            tap(src, dst, data)
        impairment = self._impairments.get(path)
        if impairment is None:
            # Seeded by the network's seed and the path alone: deterministic, and
            # independent of the traffic on other paths.
            seeded = ImpairmentConfig(seed=self._seed).derive(f"{src}->{dst}")
            impairment = self._impairments[path] = Impairment(seeded)
        # The path's model may have changed since; its random stream goes on.
        impairment.config = self._paths.get(path, self._default)
        counters = impairment.counters
        dropped, duplicated, reordered = counters.dropped, counters.duplicated, counters.reordered
        latencies = impairment.fate()
        self.stats.dropped += counters.dropped - dropped
        self.stats.duplicated += counters.duplicated - duplicated
        self.stats.reordered += counters.reordered - reordered
        for latency in latencies:
            self._schedule(src, dst, data, self.now + latency)

    def _schedule(self, src: Address, dst: Address, data: bytes, arrival: float) -> None:
        self._order += 1
        heapq.heappush(self._queue, _InFlight(arrival, self._order, src, dst, data))


def _config(model: PathSpec) -> ImpairmentConfig:
    return model.impairment() if isinstance(model, PathModel) else model
