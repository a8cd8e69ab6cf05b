"""Several relay cores on one shared room (udpchat.relay.memory_shared), real client sessions,
the simulated network: the set-up the shared-room tests share (virtual clock, seeded, no
sockets)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.client_support import RELAY_STATIC, TIME, client_addr, of, seeded
from udpchat import events as ev
from udpchat.client.config import ClientConfig
from udpchat.client.session import ClientSession
from udpchat.client.states import SessionState
from udpchat.endpoint import Address
from udpchat.relay.config import RelayConfig
from udpchat.relay.core import RelayCore
from udpchat.relay.memory_shared import SharedRoom
from udpchat.sim import PathModel, SimNetwork

CONFIG = RelayConfig(timeout=5.0, flood_burst=100, flood_rate=100.0)


def relay_addr(i: int) -> Address:
    return (f"10.0.0.{i + 1}", 4000)


class Forwarder:
    """An address a client knows as its relay, which hands its datagrams to one relay of the
    room, and that relay's answers back: move ``target`` and the client has moved."""

    def __init__(self, net: SimNetwork, addr: Address, target: Address) -> None:
        self.net, self.addr, self.target = net, addr, target
        self.client: Address | None = None
        self.out: list[tuple[bytes, Address]] = []
        self.drop_answers = False  # lose what the relay sends the client

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        if addr == self.target:
            if self.client is not None and not self.drop_answers:
                self.out.append((data, self.client))
        elif addr[0].startswith("10.0.1."):  # a client
            self.client = addr
            self.out.append((data, self.target))

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Address]]:
        out, self.out = self.out, []
        return out

    def next_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


@dataclass
class Cluster:
    net: SimNetwork
    room: SharedRoom
    relays: list[RelayCore]
    members: list[ClientSession] = field(default_factory=list)

    def relay_of(self, i: int) -> RelayCore:
        return self.relays[i]

    def join(
        self, nick: str, relay: int, i: int | None = None, via: Address | None = None
    ) -> ClientSession:
        """A member joined to relay ``relay`` (or through ``via``), waited for."""
        session = self.start(nick, relay, i, via)
        assert self.net.run_until(lambda: session.state is SessionState.JOINED, 5)
        return session

    def start(
        self, nick: str, relay: int, i: int | None = None, via: Address | None = None
    ) -> ClientSession:
        i = len(self.members) if i is None else i
        server = via or relay_addr(relay)
        session = ClientSession(
            ClientConfig(nick, server), seeded(100 + i), self.net.now, wall_offset=TIME
        )
        self.net.attach(client_addr(i), session)
        session.connect(self.net.now)
        self.members.append(session)
        return session

    def settle(self, timeout: float = 10.0) -> None:
        """Run until every member in the room has nothing unconfirmed, then a little more."""
        live = [s for s in self.members if s.state is SessionState.JOINED]
        assert self.net.run_until(lambda: all(s.idle for s in live), timeout)
        self.net.run(0.2)


def cluster(
    count: int = 3,
    config: RelayConfig = CONFIG,
    seed: int = 1,
    model: PathModel | None = None,
    history: int | None = None,
) -> Cluster:
    """``count`` relays on one shared room; the same static key, as one service."""
    net = SimNetwork(seed=seed, default=model or PathModel(delay=0.002))
    room = SharedRoom(config.history if history is None else history, seeded(seed + 500))
    relays = []
    for i in range(count):
        relay = RelayCore(
            config,
            net.now,
            seeded(seed * 10 + i),
            wall_offset=TIME,
            static_key=RELAY_STATIC,
            room_log=room.connect(),
        )
        net.attach(relay_addr(i), relay)
        relays.append(relay)
    return Cluster(net, room, relays)


def chat(session: ClientSession) -> list[tuple[int, str]]:
    """(seq, text) of every chat message a member was shown live, its own included."""
    return [
        (e.seq, e.text)
        for e in of(session, ev.MessageReceived)
        if isinstance(e, ev.MessageReceived) and not e.history
    ]


def left(session: ClientSession) -> list[str]:
    """Every member a session was told had left, batched or not, in order."""
    out: list[str] = []
    for e in of(session, ev.MemberLeft) + of(session, ev.MembersLeft):
        if isinstance(e, ev.MemberLeft) and not e.history:
            out.append(e.nick)
        elif isinstance(e, ev.MembersLeft) and not e.history:
            out.extend(e.nicks)
    return out


def joined(session: ClientSession) -> list[str]:
    out: list[str] = []
    for e in of(session, ev.MemberJoined) + of(session, ev.MembersJoined):
        if isinstance(e, ev.MemberJoined) and not e.history:
            out.append(e.nick)
        elif isinstance(e, ev.MembersJoined) and not e.history:
            out.extend((*e.nicks, *e.returned))
    return out
