"""A pure, seeded model of a bad network: loss, bursts, duplicates, reordering, delay, jitter.

The model never touches sockets, threads or the wall clock: the caller passes ``now`` in
and asks which datagrams are ``due``. That keeps every experiment reproducible from a seed
and lets tests drive it with a virtual clock.
"""

from __future__ import annotations

import heapq
import math
import random
import re
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar, cast, overload

__all__ = ["Impairment", "ImpairmentConfig", "ImpairmentCounters", "parse_duration", "parse_rate"]

T = TypeVar("T")

_RATE_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(%?)\s*$")
_DURATION_RE = re.compile(
    r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(us|µs|ms|s)?\s*$", re.IGNORECASE
)
_DURATION_DIVISORS = {"": 1.0, "s": 1.0, "ms": 1e3, "us": 1e6, "µs": 1e6}


def parse_rate(text: str) -> float:
    """Parse a probability written as ``"20%"`` or ``"0.2"`` (both give 0.2)."""
    match = _RATE_RE.match(text)
    if match is None:
        raise ValueError(f"invalid rate {text!r}: expected e.g. '5%' or '0.05'")
    number, percent = match.groups()
    value = float(number) / 100 if percent else float(number)
    if not 0.0 <= value <= 1.0:
        hint = f"; did you mean {number}%?" if not percent and float(number) <= 100 else ""
        raise ValueError(f"invalid rate {text!r}: must be between 0 and 1 (0% and 100%){hint}")
    return value


def parse_duration(text: str) -> float:
    """Parse a duration in seconds written as ``"30ms"``, ``"250us"``, ``"1.5s"`` or ``"0.03"``."""
    match = _DURATION_RE.match(text)
    if match is None:
        raise ValueError(f"invalid duration {text!r}: expected e.g. '30ms', '250us' or '0.03'")
    number, unit = match.groups()
    value = float(number) / _DURATION_DIVISORS[(unit or "").lower()]
    if not math.isfinite(value):
        raise ValueError(f"invalid duration {text!r}: must be finite")
    return value


def _check_probability(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be a probability between 0 and 1, got {value!r}")


def _check_seconds(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0.0):
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")


@dataclass(frozen=True)
class ImpairmentConfig:
    """What the simulated network does to each datagram; all zero means a perfect network.

    Loss is a two-state Gilbert-Elliott chain. In the *good* state a datagram is lost with
    probability ``loss``; in the *bad* state with ``burst_loss``. Before each datagram the
    chain moves good->bad with ``p_good_to_bad`` and bad->good with ``p_bad_to_good``, so a
    bad spell lasts ``1 / p_bad_to_good`` datagrams on average. With ``p_good_to_bad == 0``
    (the default) the chain never leaves the good state and loss is independent.
    :meth:`with_bursts` builds the chain from an average loss rate and a mean burst length.

    Each surviving datagram is delayed by ``delay`` plus a uniform draw in
    ``[-jitter, +jitter]`` (clamped at zero, so the mean exceeds ``delay`` when
    ``jitter > delay``). A ``reorder`` fraction is held back a further ``reorder_delay``
    so that datagrams sent just after it overtake it. A ``duplicate`` fraction is sent
    twice, the copy with its own jitter draw.
    """

    loss: float = 0.0
    burst_loss: float = 1.0
    p_good_to_bad: float = 0.0
    p_bad_to_good: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    reorder_delay: float = 0.02
    delay: float = 0.0
    jitter: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("loss", "burst_loss", "p_good_to_bad", "p_bad_to_good"):
            _check_probability(name, getattr(self, name))
        for name in ("duplicate", "reorder"):
            _check_probability(name, getattr(self, name))
        for name in ("reorder_delay", "delay", "jitter"):
            _check_seconds(name, getattr(self, name))
        if self.p_good_to_bad > 0 and self.p_bad_to_good == 0:
            raise ValueError("p_bad_to_good must be > 0 when p_good_to_bad > 0 (bursts must end)")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"seed must be an int, got {self.seed!r}")

    def with_bursts(self, average_loss: float, mean_burst: float) -> ImpairmentConfig:
        """This config with losses in bursts: ``average_loss`` overall, ``mean_burst`` long.

        The bad state then loses everything and the good state nothing.
        """
        _check_probability("average_loss", average_loss)
        if not (isinstance(mean_burst, (int, float)) and 1.0 <= mean_burst < math.inf):
            raise ValueError(f"mean_burst must be a number of datagrams >= 1, got {mean_burst!r}")
        if average_loss >= 1.0:
            raise ValueError("average_loss must be < 1 for bursty loss (use loss=1 instead)")
        leave = 1.0 / mean_burst
        enter = leave * average_loss / (1.0 - average_loss)
        if enter > 1.0:
            raise ValueError(
                f"average_loss {average_loss} is too high for bursts of {mean_burst} datagrams"
            )
        return replace(self, loss=0.0, burst_loss=1.0, p_good_to_bad=enter, p_bad_to_good=leave)

    @property
    def mean_loss(self) -> float:
        """Long-run fraction of datagrams lost (stationary average of the two states)."""
        if self.p_good_to_bad == 0:
            return self.loss
        bad = self.p_good_to_bad / (self.p_good_to_bad + self.p_bad_to_good)
        return (1.0 - bad) * self.loss + bad * self.burst_loss

    @property
    def is_noop(self) -> bool:
        """True when every datagram passes unchanged and immediately."""
        return (
            self.mean_loss == 0
            and self.duplicate == 0
            and self.delay == 0
            and self.jitter == 0
            and (self.reorder == 0 or self.reorder_delay == 0)
        )

    def derive(self, stream: str) -> ImpairmentConfig:
        """The same impairment with an independent seed, e.g. one per direction."""
        return replace(self, seed=random.Random(f"{self.seed}/{stream}").getrandbits(63))


@dataclass
class ImpairmentCounters:
    """What the model did so far; ``passed + dropped`` is the number of datagrams submitted.

    ``duplicated`` counts extra copies, ``reordered`` datagrams held back to be overtaken,
    and ``delayed`` scheduled copies (originals or duplicates) released later than submitted.
    """

    passed: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    delayed: int = 0

    @property
    def submitted(self) -> int:
        return self.passed + self.dropped


@dataclass(order=True)
class _Pending(Generic[T]):
    release: float
    order: int
    data: bytes = field(compare=False)
    tag: T = field(compare=False)


class Impairment(Generic[T]):
    """Decides the fate of each datagram and holds it until its release time.

    ``T`` is an opaque tag carried with each datagram (typically its destination address),
    so a socket wrapper knows where a datagram goes when it is finally released.
    """

    def __init__(self, config: ImpairmentConfig) -> None:
        self.config = config
        self.counters = ImpairmentCounters()
        self._rng = random.Random(config.seed)
        self._bad = False
        self._heap: list[_Pending[T]] = []
        self._order = 0

    def __len__(self) -> int:
        """Datagrams accepted but not yet released."""
        return len(self._heap)

    @overload
    def submit(self: Impairment[None], data: bytes, now: float) -> None: ...
    @overload
    def submit(self, data: bytes, now: float, tag: T) -> None: ...
    def submit(self, data: bytes, now: float, tag: T | None = None) -> None:
        """Drop, delay and/or duplicate one datagram handed to the network at ``now``."""
        for latency in self.fate():
            self._schedule(data, cast(T, tag), now, latency)

    def fate(self) -> list[float]:
        """Decide what happens to the next datagram, without holding it: the latency of
        each copy that arrives (none: lost; two: duplicated), counted in ``counters``.

        ``submit`` holds datagrams in this model's own queue; a simulator that keeps one
        queue for a whole network (udpchat.sim) asks only for the fate and holds them itself.
        """
        cfg, rng = self.config, self._rng
        if cfg.p_good_to_bad > 0:
            flip = cfg.p_bad_to_good if self._bad else cfg.p_good_to_bad
            if rng.random() < flip:
                self._bad = not self._bad
        else:  # a path without bursts (perhaps healed since the last datagram) is never bad
            self._bad = False
        loss = cfg.burst_loss if self._bad else cfg.loss
        if loss > 0 and rng.random() < loss:
            self.counters.dropped += 1
            return []
        self.counters.passed += 1
        extra = 0.0
        if cfg.reorder > 0 and rng.random() < cfg.reorder:
            self.counters.reordered += 1
            extra = cfg.reorder_delay
        latencies = [self._latency() + extra]
        if cfg.duplicate > 0 and rng.random() < cfg.duplicate:
            self.counters.duplicated += 1
            latencies.append(self._latency())
        self.counters.delayed += sum(1 for latency in latencies if latency > 0)
        return latencies

    def due(self, now: float) -> list[tuple[bytes, T]]:
        """Remove and return the datagrams whose release time is ``<= now``, in release order."""
        out: list[tuple[bytes, T]] = []
        while self._heap and self._heap[0].release <= now:
            item = heapq.heappop(self._heap)
            out.append((item.data, item.tag))
        return out

    def next_deadline(self) -> float | None:
        """When the next datagram becomes due, or None when nothing is held."""
        return self._heap[0].release if self._heap else None

    def _latency(self) -> float:
        cfg = self.config
        if cfg.jitter == 0:
            return cfg.delay
        return max(0.0, cfg.delay + self._rng.uniform(-cfg.jitter, cfg.jitter))

    def _schedule(self, data: bytes, tag: T, now: float, latency: float) -> None:
        heapq.heappush(self._heap, _Pending(now + latency, self._order, data, tag))
        self._order += 1
