"""The relay's room: welcome and history, fan-out in one order, requests and their answers,
nicknames, private messages, flood control (protocol.md 6). Simulated network, virtual clock."""

from __future__ import annotations

import pytest

from tests.fakeclient import join_datagram
from tests.relaysim import RELAY, Sink, client_addr, join, setup
from udpchat import messages as m
from udpchat import wire
from udpchat.relay.config import RelayConfig
from udpchat.sim import PathModel

pytestmark = pytest.mark.unit


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
