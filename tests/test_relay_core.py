"""The relay core on a simulated network: handshakes, membership, fan-out, timers, abuse."""

from __future__ import annotations

import random

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakeclient import FakeClient, join_datagram, quick_room_key, stray_session
from udpchat import handshake as hs
from udpchat import messages as m
from udpchat import wire
from udpchat.relay.config import RelayConfig
from udpchat.relay.core import RelayCore
from udpchat.relay.events import DatagramDropped
from udpchat.relay.sessions import MemberState
from udpchat.sim import PathModel, SimNetwork

RELAY = ("127.0.0.1", 9000)
STATIC = bytes(range(32))


def client_addr(i: int) -> tuple[str, int]:
    return ("127.0.0.1", 40000 + i)


def setup(config: RelayConfig | None = None, model: PathModel | None = None, seed: int = 1):
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


def test_join_welcome_and_announcement() -> None:
    net, relay = setup()
    alice = join(net, "alice", 1)
    bob = join(net, "bob", 2)
    assert alice.accept is not None and len(alice.accept.token) == 8
    welcome = bob.of(m.Welcome)[0]
    assert welcome.nick == "bob" and set(welcome.members) == {"alice", "bob"}
    net.run(0.1)
    assert [j.nick for j in alice.of(m.Joined)] == ["bob"]
    assert relay.member_nicks() == ["alice", "bob"]


@pytest.mark.parametrize(
    "nick, code",
    [
        ("ALICE", wire.RejectCode.NICK_TAKEN),
        ("\uff21\uff4c\uff49\uff43\uff45", wire.RejectCode.NICK_TAKEN),  # full-width
        ("has space", wire.RejectCode.NICK_INVALID),
        ("x" * 33, wire.RejectCode.NICK_INVALID),
        ("evil\u202e", wire.RejectCode.NICK_INVALID),
    ],
)
def test_join_rejections(nick: str, code: wire.RejectCode) -> None:
    net, _ = setup()
    join(net, "alice", 1)
    other = join(net, nick, 2)
    assert other.reject is not None and other.reject.code == code
    assert other.reject.nonce == other.nonce
    assert other.link is None


def test_relay_full() -> None:
    net, _ = setup(RelayConfig(max_members=2))
    join(net, "a", 1)
    join(net, "b", 2)
    c = join(net, "c", 3)
    assert c.reject is not None and c.reject.code == wire.RejectCode.RELAY_FULL


def test_other_protocol_version_is_told() -> None:
    net, _relay = setup()
    seen: list[bytes] = []
    net.attach(client_addr(1), Sink(seen))
    hello_v9 = bytearray(wire.encode_hello(b"n" * 8))
    hello_v9[1] = 9
    net.inject(client_addr(1), RELAY, bytes(hello_v9))
    net.run(0.1)
    (reply,) = seen
    # In the requester's version, so that it can read it (protocol.md 3.1); it could not
    # read the nonce: the REJECT is bound to the whole request instead.
    version, kind, nonce, code, reason = msgpack.unpackb(reply)
    assert (version, kind, code) == (9, wire.DatagramType.REJECT, wire.RejectCode.VERSION)
    assert nonce == wire.request_hash(bytes(hello_v9))
    assert reason == "this relay speaks udpchat protocol version 2"


class Sink:
    def __init__(self, seen: list[bytes]) -> None:
        self.seen = seen

    def receive_datagram(self, data: bytes, addr: object, now: float) -> None:
        self.seen.append(data)

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, tuple[str, int]]]:
        return []

    def next_timer(self) -> float | None:
        return None

    def handle_timer(self, now: float) -> None:
        pass


def test_fan_out_gives_every_member_one_order_under_loss() -> None:
    net, _relay = setup(model=PathModel(loss=0.2, reorder=0.1, duplicate=0.05, jitter=0.002))
    clients = [join(net, f"user{i}", i) for i in range(4)]
    assert all(c.joined for c in clients)
    for round_ in range(10):
        for i, c in enumerate(clients):
            c.send(m.Say(f"r{round_} from {i}"))
        net.run(0.01)
    assert net.run_until(lambda: all(c.link and c.link.idle for c in clients), 30)
    net.run(1)
    views = []
    for c in clients:
        events = [e for e in c.room_events() if e[1] != "Joined"]
        seqs = [s for s, _ in events]
        assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))
        views.append(events)
    chats = {s for s, d in views[0]}
    for v in views[1:]:
        assert {s for s, _ in v} == chats  # every member saw every message, own ones as POSTED
    assert len(chats) == 40
    # the nick shown is the registered one
    for c in clients:
        for msg in c.of(m.ChatMessage):
            sender = int(msg.text.rsplit(" ", 1)[1])
            assert msg.nick == f"user{sender}"


def test_silent_member_times_out_and_everyone_is_told() -> None:
    net, relay = setup(RelayConfig(heartbeat=0.2, timeout=1.0))
    alice = join(net, "alice", 1)
    bob = join(net, "bob", 2)
    alice.heartbeat = 0.2
    net.run(0.5)
    net.detach(client_addr(2))  # bob vanishes
    net.run(2.0)
    left = alice.of(m.Left)
    assert [(x.nick, x.reason) for x in left] == [("bob", m.LeaveReason.TIMEOUT)]
    assert relay.member_nicks() == ["alice"]
    assert bob.nick not in relay.member_nicks()


def test_heartbeat_keeps_a_member() -> None:
    net, relay = setup(RelayConfig(heartbeat=0.2, timeout=1.0))
    alice = join(net, "alice", 1)
    alice.heartbeat = 0.2
    net.run(10)
    assert relay.member_nicks() == ["alice"]


def test_quit_is_announced_and_acknowledged() -> None:
    net, relay = setup()
    alice = join(net, "alice", 1)
    bob = join(net, "bob", 2)
    bob.send(m.Quit("see you"))
    assert net.run_until(lambda: bob.link is not None and bob.link.idle, 2)
    net.run(0.1)
    (left,) = alice.of(m.Left)
    assert (left.nick, left.reason, left.text) == ("bob", m.LeaveReason.QUIT, "see you")
    assert relay.member_nicks() == ["alice"]


def test_private_message_and_errors() -> None:
    net, _ = setup()
    alice = join(net, "alice", 1)
    bob = join(net, "bob", 2)
    carol = join(net, "carol", 3)
    alice.send(m.PrivateSend("BOB", "psst"))
    alice.send(m.PrivateSend("zed", "hello?"))
    net.run(0.5)
    assert [p.text for p in bob.of(m.Private)] == ["psst"]
    assert bob.of(m.Private)[0].sender == "alice"
    assert [p.to for p in alice.of(m.Private)] == ["bob"]
    assert carol.of(m.Private) == []
    assert "no such nickname" in alice.of(m.Error)[0].text


def test_nick_change() -> None:
    net, relay = setup()
    alice = join(net, "alice", 1)
    bob = join(net, "bob", 2)
    bob.send(m.NickRequest("Alice"))
    bob.send(m.NickRequest("bobby"))
    net.run(0.5)
    assert "taken" in bob.of(m.Error)[0].text
    for c in (alice, bob):
        (change,) = c.of(m.NickChanged)
        assert (change.old, change.new) == ("bob", "bobby")
    bob.send(m.Say("hi"))
    net.run(0.5)
    assert alice.of(m.ChatMessage)[-1].nick == "bobby"
    assert relay.member_nicks() == ["alice", "bobby"]


def test_who() -> None:
    net, _ = setup()
    alice = join(net, "alice", 1)
    join(net, "bob", 2)
    alice.send(m.Who())
    net.run(0.5)
    assert alice.of(m.Members)[0].members == ("alice", "bob")


def test_history_for_new_member_and_catch_up_on_resume() -> None:
    net, relay = setup(RelayConfig(join_history=3))
    alice = join(net, "alice", 1)
    bob = join(net, "bob", 2)
    for i in range(5):
        alice.send(m.Say(f"early {i}"))
    net.run(0.5)
    carol = join(net, "carol", 3)
    net.run(0.5)
    assert [x.text for x in carol.of(m.ChatMessage)] == ["early 2", "early 3", "early 4"]
    welcome = carol.of(m.Welcome)[0]
    assert all(x.seq <= welcome.seq for x in carol.of(m.ChatMessage))
    # bob loses his connection, misses messages, and resumes
    assert bob.accept is not None and bob.link is not None
    last_seq = max(s for s, _ in bob.room_events())
    old_token = bob.accept.token
    net.detach(client_addr(2))
    for i in range(3):
        alice.send(m.Say(f"missed {i}"))
    net.run(0.5)
    resume = wire.Resume(relay.epoch, old_token, last_seq)
    bob2 = join(net, "bob", 4, resume=resume, resume_secret=bob.resume_secret)
    assert bob2.joined
    net.run(0.5)
    assert [x.text for x in bob2.of(m.ChatMessage)] == ["missed 0", "missed 1", "missed 2"]
    assert relay.member_nicks() == ["alice", "bob", "carol"]
    assert [x.nick for x in alice.of(m.Left)] == []  # a resume is not a leave
    assert old_token not in relay.members


def test_flood_control_refuses_without_reordering() -> None:
    net, _ = setup(RelayConfig(flood_burst=3, flood_rate=1.0))
    alice = join(net, "alice", 1)
    bob = join(net, "bob", 2)
    for i in range(6):
        alice.send(m.Say(f"spam {i}"))
    net.run(0.5)
    answers = [type(x).__name__ for x in alice.received if isinstance(x, (m.Posted, m.Refused))]
    assert answers == ["Posted"] * 3 + ["Refused"] * 3
    assert [x.text for x in bob.of(m.ChatMessage)] == ["spam 0", "spam 1", "spam 2"]
    net.run(2.0)
    alice.send(m.Say("later"))
    net.run(0.5)
    assert bob.of(m.ChatMessage)[-1].text == "later"


def test_unknown_token_gets_reset() -> None:
    net, relay = setup()
    seen: list[bytes] = []
    net.attach(client_addr(1), Sink(seen))
    net.inject(client_addr(1), RELAY, stray_session(b"T" * 8))
    net.run(0.1)
    proof = hs.reset_token(hs.reset_secret(STATIC), b"T" * 8)
    assert [wire.decode_datagram(d) for d in seen] == [wire.Reset(b"T" * 8, proof)]
    assert relay.stats.unknown_session == 1


def test_spoofed_join_cannot_complete() -> None:
    """A cookie sent to one address is worthless from another."""
    net, relay = setup()
    victim_cookie: list[bytes] = []
    net.attach(client_addr(1), Sink(victim_cookie))
    net.inject(client_addr(1), RELAY, wire.encode_hello(b"n" * 8))
    net.run(0.1)
    challenge = wire.decode_datagram(victim_cookie[0])
    assert isinstance(challenge, wire.Challenge)
    net.inject(client_addr(2), RELAY, join_datagram(b"n" * 8, challenge, "mallory"))
    net.run(0.1)
    assert relay.member_nicks() == []
    assert relay.stats.bad_cookies == 1


def test_address_change_keeps_the_session_and_is_validated() -> None:
    net, relay = setup()
    alice = join(net, "alice", 1)
    bob = join(net, "bob", 2)
    net.run(0.2)
    net.move(client_addr(2), client_addr(9))  # NAT rebinding: new source port
    bob.send(m.Say("from my new port"))
    net.run(0.5)
    assert alice.of(m.ChatMessage)[-1].text == "from my new port"
    assert any(isinstance(x, wire.PathChallenge) for x in bob.other)
    member = next(iter(x for x in relay.members.values() if x.nick == "bob"))
    assert member.addr == client_addr(9) and member.state is MemberState.ACTIVE
    alice.send(m.Say("can you hear me?"))
    net.run(0.5)
    assert bob.of(m.ChatMessage)[-1].text == "can you hear me?"
    assert relay.member_nicks() == ["alice", "bob"]


def test_unvalidated_address_gets_at_most_three_times_what_it_sent() -> None:
    net, relay = setup()
    alice = join(net, "alice", 1)
    bob = join(net, "bob", 2)
    assert bob.link is not None
    net.run(0.2)
    # Someone replays... no: bob really moves, but his PATH_RESPONSEs are all lost.
    net.move(client_addr(2), client_addr(9))
    net.set_path(client_addr(9), RELAY, PathModel())
    sent_to_new: list[int] = []
    received_from_new: list[int] = []

    def tap(src, dst, data):  # type: ignore[no-untyped-def]
        if dst == client_addr(9):
            sent_to_new.append(len(data))
        if src == client_addr(9):
            received_from_new.append(len(data))

    net.taps.append(tap)
    original = bob.receive_datagram

    def no_path_response(data: bytes, addr, now: float) -> None:  # type: ignore[no-untyped-def]
        datagram = wire.decode_datagram(data)
        if (
            isinstance(datagram, wire.Protected)
            and datagram.kind == wire.DatagramType.PATH_CHALLENGE
        ):
            return
        original(data, addr, now)

    bob.receive_datagram = no_path_response  # type: ignore[method-assign]
    bob.link.ping()
    for i in range(30):
        alice.send(m.Say("x" * 1000 + str(i)))
    net.run(2)
    assert sum(sent_to_new) <= 3 * sum(received_from_new)
    assert relay.stats.amplification_held > 0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=1300), max_size=20), st.integers(0, 2**16))
def test_garbage_never_crashes_or_disturbs(garbage: list[bytes], seed: int) -> None:
    net, relay = setup(seed=seed)
    alice = join(net, "alice", 1)
    bob = join(net, "bob", 2)
    assert alice.accept is not None
    # An off-path attacker does not know the token: a guess is one bit away at best.
    forged = bytes([alice.accept.token[0] ^ 1]) + alice.accept.token[1:]
    for g in garbage:
        net.inject(client_addr(7), RELAY, g)
        net.inject(client_addr(1), RELAY, msgpack.packb([1, 6, forged, 10**6, 0, 0, 0, False, g]))
    alice.send(m.Say("still here"))
    net.run(0.5)
    assert bob.of(m.ChatMessage)[-1].text == "still here"
    assert relay.member_nicks() == ["alice", "bob"]


def test_idle_members_cost_no_polling() -> None:
    """With 200 idle members the relay's timer heap wakes once per member per timeout."""
    config = RelayConfig(timeout=10.0, handshake_burst=1000, max_members_per_host=1024)
    net, relay = setup(config)
    clients = [join(net, f"m{i}", i) for i in range(200)]
    for c in clients:
        c.heartbeat = 1.0
    net.run(2)
    calls = 0
    original = relay.handle_timer

    def counting(now: float) -> None:
        nonlocal calls
        calls += 1
        original(now)

    relay.handle_timer = counting  # type: ignore[method-assign]
    net.run(10)
    assert len(relay.members) == 200
    # ~200 expiry re-arms in 10 s, not 200 members x every tick
    assert calls < 600
    assert len(relay.sessions.timers) <= 2 * len(relay.members) + 10


def test_shutdown_tells_members() -> None:
    net, relay = setup()
    alice = join(net, "alice", 1)
    relay.shutdown("maintenance", net.now)
    assert net.run_until(lambda: relay.closed, 2)
    net.run(0.1)
    assert alice.of(m.Shutdown)[0].text == "maintenance"


def test_a_new_member_is_flushed_first_and_output_can_be_taken_in_batches() -> None:
    net, relay = setup(RelayConfig(handshake_burst=1000, max_members_per_host=1024))
    for i in range(100):
        join(net, f"m{i}", i)
    net.run(0.5)
    newcomer_addr = client_addr(500)
    seen: list[bytes] = []
    net.attach(newcomer_addr, Sink(seen))
    nonce = b"n" * 8
    net.inject(newcomer_addr, RELAY, wire.encode_hello(nonce))
    net.run(0.001)
    challenge = wire.decode_datagram(seen[-1])
    assert isinstance(challenge, wire.Challenge)
    net.detach(RELAY)  # from here on we drive the relay by hand
    relay.receive_datagram(join_datagram(nonce, challenge, "newcomer"), newcomer_addr, net.now)
    first = relay.datagrams_to_send(net.now, limit=8)
    # ACCEPT and WELCOME alone: the JOINED fan-out waits for the next call
    assert [addr for _, addr in first] == [newcomer_addr, newcomer_addr]
    assert isinstance(wire.decode_datagram(first[0][0]), wire.Accept)
    assert relay.next_timer() == float("-inf")  # more output is waiting
    rest: list[tuple[bytes, tuple[str, int]]] = []
    for _ in range(100):
        batch = relay.datagrams_to_send(net.now, limit=8)
        rest.extend(batch)
        if len(batch) < 8:
            break
    # everyone else gets the JOINED announcement, once
    announced = [addr for _, addr in first[2:] + rest]
    assert sorted(announced) == sorted(client_addr(i) for i in range(100))


def test_answers_never_overtake_a_held_joined() -> None:
    """A SAY handled right after a JOIN, before the JOINED fan-out is released: its sender
    still gets JOINED (seq n) before POSTED (seq n + 1)."""
    net, relay = setup()
    alice = join(net, "alice", 1)
    assert alice.link is not None
    newcomer_addr = client_addr(2)
    seen: list[bytes] = []
    net.attach(newcomer_addr, Sink(seen))
    net.inject(newcomer_addr, RELAY, wire.encode_hello(b"n" * 8))
    net.run(0.001)
    challenge = wire.decode_datagram(seen[-1])
    assert isinstance(challenge, wire.Challenge)
    alice.send(m.Say("right after"))
    say = alice.link.datagrams_to_send(net.now)
    net.detach(RELAY)
    relay.receive_datagram(join_datagram(b"n" * 8, challenge, "newcomer"), newcomer_addr, net.now)
    for datagram in say:
        relay.receive_datagram(datagram, client_addr(1), net.now)
    for _ in range(10):
        for data, addr in relay.datagrams_to_send(net.now):
            if addr == client_addr(1):
                alice.receive_datagram(data, RELAY, net.now)
    order = [type(x).__name__ for x in alice.received if isinstance(x, (m.Joined, m.Posted))]
    assert order == ["Joined", "Posted"]
    seqs = [x.seq for x in alice.received if isinstance(x, (m.Joined, m.Posted))]
    assert seqs == sorted(seqs)


# --- source port 0 ------------------------------------------------------------------------------

PORT_ZERO = ("127.0.0.1", 0)


def test_every_datagram_from_port_zero_is_dropped_unanswered() -> None:
    """protocol.md 3.1: nothing sent to port 0 can arrive, so nothing from it is answered,
    and no session moves there, even with a member's own token."""
    net, relay = setup()
    alice = join(net, "alice", 1)
    net.run(0.2)
    assert alice.accept is not None
    now = net.now
    rng = random.Random(5)
    nonce = rng.randbytes(8)
    version_3 = bytearray(wire.encode_hello(rng.randbytes(8)))
    version_3[1] = 3
    cookie = relay.gate.issue_cookie(nonce, PORT_ZERO, now)
    challenge = wire.Challenge(nonce, cookie, relay.relay_key, False)
    datagrams = [
        wire.encode_hello(nonce),  # 1200 bytes: would get a CHALLENGE
        join_datagram(nonce, challenge, "mallory"),
        stray_session(rng.randbytes(8)),  # unknown token: RESET
        stray_session(alice.accept.token, 10**6),  # a stranger's: fails to authenticate
        bytes(version_3),  # would get REJECT VERSION
        rng.randbytes(1200),
        b"",
    ]
    relay.datagrams_to_send(now)
    relay.events()
    before = relay.stats.datagrams_received
    for data in datagrams:
        relay.receive_datagram(data, PORT_ZERO, now)
    relay.handle_timer(now)
    assert relay.datagrams_to_send(now) == []
    events = relay.events()
    assert events == [DatagramDropped("from port 0", PORT_ZERO)] * len(datagrams)
    assert relay.stats.from_port_zero == len(datagrams)
    assert relay.stats.datagrams_received == before
    assert relay.member_nicks() == ["alice"]
    assert [mb.addr for mb in relay.members.values()] == [client_addr(1)]


def test_keyed_relay_drops_everything_from_port_zero() -> None:
    room_key = quick_room_key(b"key")
    relay = RelayCore(RelayConfig(), 0.0, random.Random(1).randbytes, room_key=room_key)
    cookie = relay.gate.issue_cookie(b"n" * 8, PORT_ZERO, 0.0)
    challenge = wire.Challenge(b"n" * 8, cookie, relay.relay_key, True)
    keyed_join = join_datagram(b"n" * 8, challenge, "alice", room_key=quick_room_key(b"key"))
    for data in (random.Random(4).randbytes(1200), wire.encode_hello(b"n" * 8), keyed_join):
        relay.receive_datagram(data, PORT_ZERO, 0.0)
    assert relay.datagrams_to_send(0.0) == []
    assert relay.stats.from_port_zero == 3 and relay.stats.bad_key == 0


def test_a_post_whose_answer_cannot_be_queued_leaves_no_gap_in_the_room_sequence() -> None:
    """protocol.md 6.3: one number per room event. A SAY whose POSTED does not fit in its
    sender's full queue is not posted, the sender is dropped, and the LEFT that tells the
    others takes the next number: nobody sees a gap where nothing was lost."""
    net, relay = setup()
    alice = join(net, "alice", 1)
    bob = join(net, "bob", 2)
    net.run(0.2)
    assert bob.link is not None
    seen = max(seq for seq, _ in alice.room_events())
    net.detach(RELAY)  # from here on we drive the relay by hand
    member = next(mb for mb in relay.members.values() if mb.nick == "bob")
    while member.link.send_buffer_free > 1:  # bob's queue on the relay is full to a byte
        member.link.send(b"x" * min(member.link.send_buffer_free - 1, m.MAX_MESSAGE_SIZE))
    bob.send(m.Say("no room for my POSTED"))
    for datagram in bob.link.datagrams_to_send(net.now):
        relay.receive_datagram(datagram, client_addr(2), net.now)
    assert relay.member_nicks() == ["alice"]
    for data, addr in relay.datagrams_to_send(net.now):
        if addr == client_addr(1):
            alice.receive_datagram(data, RELAY, net.now)
    (left,) = alice.of(m.Left)
    assert (left.nick, left.reason) == ("bob", m.LeaveReason.DROPPED)
    assert left.seq == seen + 1
    assert alice.of(m.ChatMessage) == []
