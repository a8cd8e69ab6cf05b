"""A relay core on a simulated network, and bare-bones clients joining it: the set-up the
relay's unit tests share (virtual clock, seeded everything, no sockets)."""

from __future__ import annotations

import random

from tests.fakeclient import FakeClient
from udpchat.relay.config import RelayConfig
from udpchat.relay.core import RelayCore
from udpchat.sim import Address, PathModel, SimNetwork

RELAY: Address = ("127.0.0.1", 9000)
STATIC = bytes(range(32))


def client_addr(i: int) -> Address:
    return ("127.0.0.1", 40000 + i)


def setup(
    config: RelayConfig | None = None, model: PathModel | None = None, seed: int = 1
) -> tuple[SimNetwork, RelayCore]:
    net = SimNetwork(seed=seed, default=model or PathModel())
    relay = RelayCore(
        config or RelayConfig(), 0.0, random.Random(seed).randbytes, static_key=STATIC
    )
    net.attach(RELAY, relay)
    return net, relay


def join(net: SimNetwork, nick: str, i: int, **kw) -> FakeClient:  # type: ignore[no-untyped-def]
    client = FakeClient(nick, RELAY, seed=i, **kw)
    net.attach(client_addr(i), client)
    net.run_until(lambda: client.joined or client.reject is not None, 5)
    return client


class Sink:
    """An address that only listens: what the relay sends it lands in ``seen``."""

    def __init__(self, seen: list[bytes]) -> None:
        self.seen = seen

    def receive_datagram(self, data: bytes, addr: object, now: float) -> None:
        self.seen.append(data)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        return []

    def next_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass
