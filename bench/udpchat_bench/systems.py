"""The plug a chat system implements to be benchmarked, and the registry of systems.

A system only has to provide transport: a relay loop, and a member-side link that sends one
chat message and hands back delivered ones. Pacing, timestamps, delivery logging, CPU and
process management live in the benchmark itself (`udpchat_bench.worker`), so every system
is driven and measured by exactly the same code.

To add a system, implement `System` in its own module, expose an instance as a module
attribute, and add one line to `SYSTEMS`; the worker imports it by name in each subprocess.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from udpchat.endpoint import Address
from udpchat_bench.accounting import SocketMeter

LOOPBACK = "127.0.0.1"


class UnsupportedOption(ValueError):
    """The system cannot run with the requested arguments (e.g. simulated loss on TCP)."""


@dataclass(frozen=True)
class RelayArgs:
    """What a relay process is told.

    ``loss_percent`` asks the system to drop that share of the packets it *receives*, in user
    space, for machines where kernel loss is unavailable; 0 means no simulated loss. Kernel
    loss is applied outside the system and is invisible here. ``options`` are system-specific
    knobs (e.g. ``{"nodelay": True}`` for the TCP relay).
    """

    host: str = LOOPBACK
    loss_percent: float = 0.0
    seed: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["options"] = dict(self.options)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RelayArgs:
        return cls(
            host=str(data.get("host", LOOPBACK)),
            loss_percent=float(data.get("loss_percent", 0.0)),
            seed=int(data.get("seed", 0)),
            options=dict(data.get("options", {})),
        )


@dataclass(frozen=True)
class MemberArgs:
    """What a member process is told: where the relay is and who it is.

    ``member`` is the member's index in the run (0-based, unique); it is also the sender index
    written into the payloads it sends. ``connect_timeout_s`` bounds joining the relay.
    """

    relay: Address
    member: int
    loss_percent: float = 0.0
    seed: int = 0
    connect_timeout_s: float = 10.0
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["relay"] = list(self.relay)
        data["options"] = dict(self.options)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MemberArgs:
        host, port = data["relay"]
        return cls(
            relay=(str(host), int(port)),
            member=int(data["member"]),
            loss_percent=float(data.get("loss_percent", 0.0)),
            seed=int(data.get("seed", 0)),
            connect_timeout_s=float(data.get("connect_timeout_s", 10.0)),
            options=dict(data.get("options", {})),
        )


class MemberLink(Protocol):
    """A joined member, as the benchmark drives it.

    ``send`` and ``recv`` are called concurrently from two threads (one sender, one receiver)
    and must be safe to use that way; ``close`` is called once, after both have stopped.
    """

    def send(self, payload: bytes) -> None:
        """Hand one chat message to the system for delivery to every other member.

        May block (that is part of what is measured, e.g. TCP flow control), but must not
        wait for delivery.
        """
        ...

    def recv(self, timeout: float) -> bytes | None:
        """Return the next chat message delivered to the application, or None after ``timeout``.

        Return each payload exactly as the sender passed it to ``send``. Datagrams that are not
        chat messages (ACKs, keep-alives, registrations) must not surface here.
        """
        ...

    def close(self) -> None:
        """Leave and release every socket and thread the link owns."""
        ...


Delivery = Callable[[bytes, int], None]
"""A delivered chat payload and when it was delivered (``time.monotonic_ns()``)."""


@runtime_checkable
class PushLink(MemberLink, Protocol):
    """A member whose system hands deliveries to the application by calling it back.

    The benchmark then records each delivery in that callback, where an application of the
    system gets it, instead of polling ``recv`` from a thread of its own: a queue between the
    two would add a thread hand-off per message (tens of microseconds of CPU and latency)
    that a system whose ``recv`` reads its socket directly does not pay.
    """

    def deliver_to(self, callback: Delivery) -> None:
        """From now on, call ``callback`` for every delivery, in order and one call at a
        time, on whichever thread the system delivers on (for udpchat, the client's driver
        thread or the thread that called ``send``); deliveries that ``recv`` has not
        returned go first, from this call."""
        ...


@runtime_checkable
class System(Protocol):
    """A relay-based chat system the benchmark can run.

    Every socket call the system makes must be reported to the ``meter`` it is given
    (``datagram_sent``/``datagram_received`` for UDP, ``stream_sent``/``stream_received`` for
    TCP), retransmissions and ACKs included: that is how wire cost is compared.
    """

    name: str
    supports_simulated_loss: bool

    def run_relay(
        self,
        args: RelayArgs,
        meter: SocketMeter,
        ready: Callable[[Address], None],
        stop: threading.Event,
    ) -> None:
        """Bind on ``args.host`` port 0, call ``ready(address)`` once, relay until ``stop`` is
        set, then close everything and return (within about 0.5 s of ``stop``)."""
        ...

    def connect_member(self, args: MemberArgs, meter: SocketMeter) -> MemberLink:
        """Join the relay at ``args.relay`` and return once the relay knows this member, so
        that it receives every message sent after this returns. Raise ``TimeoutError`` if that
        takes longer than ``args.connect_timeout_s``."""
        ...


SYSTEMS: dict[str, str] = {
    "udpchat": "udpchat_bench.udpchat_system:UDPCHAT",
    "plain-udp": "udpchat_bench.baselines:PLAIN_UDP",
    "tcp-relay": "udpchat_bench.baselines:TCP_RELAY",
    # optional: needs pyenet (udpchat_bench.enet_system.available)
    "enet": "udpchat_bench.enet_system:ENET",
}
"""System name -> ``module:attribute`` of its `System` instance, imported only when used."""


def get_system(name: str) -> System:
    """Import and return the registered system called ``name``."""
    try:
        target = SYSTEMS[name]
    except KeyError:
        known = ", ".join(sorted(SYSTEMS))
        raise KeyError(f"unknown system {name!r} (known: {known})") from None
    module_name, _, attribute = target.partition(":")
    system = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(system, System):
        raise TypeError(f"{target} does not implement the System protocol")
    return system
