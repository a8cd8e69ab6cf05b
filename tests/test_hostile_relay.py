"""The relay core against a stranger who wants the room for himself, wants to lock others
out, or wants big answers for small requests; and the promises of protocol.md 4.2, 6.1, 6.3
and 6.5 that an independent client relies on. Simulated network, virtual clock."""

from __future__ import annotations

import random
import zlib

import msgpack
import pytest

from tests.fakeclient import FakeClient, join_datagram, stray_session
from udpchat import messages as m
from udpchat import session_bytes, wire
from udpchat.netblock import address_key, host_key, prefix_key
from udpchat.ratelimit import BucketTable
from udpchat.relay.config import AMPLIFICATION_FACTOR, RelayConfig
from udpchat.relay.core import RelayCore
from udpchat.sim import Address, PathModel, SimNetwork

pytestmark = pytest.mark.unit

RELAY: Address = ("127.0.0.1", 9000)


def setup(config: RelayConfig | None = None) -> tuple[SimNetwork, RelayCore]:
    net = SimNetwork(seed=5, default=PathModel())
    relay = RelayCore(config or RelayConfig(), 0.0, random.Random(5).randbytes)
    net.attach(RELAY, relay)
    return net, relay


def join(net: SimNetwork, nick: str, addr: Address, seed: int = 0, **kw) -> FakeClient:  # type: ignore[no-untyped-def]
    client = FakeClient(nick, RELAY, seed=seed or zlib.crc32(repr(addr).encode()), **kw)
    client.heartbeat = 1.0
    net.attach(addr, client)
    net.run_until(lambda: client.joined or client.reject is not None, 5)
    return client


# --- one host, one network: not the whole room --------------------------------------------------


def test_one_host_cannot_fill_the_room_whatever_its_ports_or_loopback_addresses() -> None:
    config = RelayConfig(max_members_per_host=64, handshake_burst=1000)
    net, _relay = setup(config)
    clients = [
        join(net, f"bot{i}", (f"127.0.{i // 200}.{i % 200 + 1}", 20000 + i)) for i in range(80)
    ]
    assert sum(c.joined for c in clients) == 64
    refused = [c.reject for c in clients if c.reject is not None]
    assert len(refused) == 16
    assert {r.code for r in refused} == {wire.RejectCode.RELAY_FULL}
    assert all("your address" in r.reason for r in refused)
    assert join(net, "newcomer", ("192.0.2.7", 5000)).joined  # someone else still gets in


@pytest.mark.parametrize(
    "hosts, other",
    [
        ([f"198.51.100.{i}" for i in range(1, 9)], "198.51.101.1"),
        ([f"2001:db8:0:1::{i:x}" for i in range(1, 9)], "2001:db8:0:2::1"),
        ([f"::ffff:198.51.100.{i}" for i in range(1, 9)], "::ffff:198.51.101.1"),
    ],
)
def test_members_are_capped_per_host_and_per_network(hosts: list[str], other: str) -> None:
    config = RelayConfig(max_members_per_host=3, max_members_per_network=5)
    net, relay = setup(config)
    # four members from one host: three get in
    same_host = [join(net, f"h{i}", (hosts[0], 6000 + i)) for i in range(4)]
    assert [c.joined for c in same_host] == [True, True, True, False]
    assert same_host[3].reject is not None and "your address" in same_host[3].reject.reason
    # more from the network: two more hosts' worth, then the network is full
    rest = [join(net, f"n{i}", (host, 7000)) for i, host in enumerate(hosts[1:5])]
    assert [c.joined for c in rest] == [True, True, False, False]
    assert rest[2].reject is not None and "your network" in rest[2].reject.reason
    assert relay.stats.network_full == 3
    assert join(net, "elsewhere", (other, 7000)).joined
    # a member leaving makes room again
    same_host[0].send(m.Quit("bye"))
    net.run(0.5)
    assert join(net, "next", (hosts[0], 6100)).joined


def test_a_resume_at_the_cap_is_not_counted_twice() -> None:
    net, relay = setup(RelayConfig(max_members_per_host=2))
    join(net, "a", ("198.51.100.1", 1000))
    b = join(net, "b", ("198.51.100.1", 1001))
    assert b.accept is not None
    net.detach(("198.51.100.1", 1001))
    assert b.payload is not None
    resume = wire.Resume(b.payload.epoch, b.accept.token, 0)
    again = join(
        net, "b", ("198.51.100.1", 1002), seed=77, resume=resume, resume_secret=b.resume_secret
    )
    assert again.joined and relay.member_nicks() == ["a", "b"]


def test_a_resume_without_the_old_sessions_proof_takes_nothing_over() -> None:
    """protocol.md 4.2, 9: the token and epoch are visible on the path (and the epoch to
    every joiner); a JOIN resuming someone's session with them but without the proof is a
    new join, which the nickname the session holds refuses."""
    net, relay = setup()
    alice = join(net, "alice", ("192.0.2.1", 1))
    assert alice.accept is not None and alice.payload is not None
    stolen = wire.Resume(alice.payload.epoch, alice.accept.token, 0)
    forged_proof = wire.Resume(alice.payload.epoch, alice.accept.token, 0, b"p" * 16)
    for i, resume in enumerate((stolen, forged_proof)):
        mallory = join(net, "alice", ("198.51.100.9", 4000 + i), seed=90 + i, resume=resume)
        assert mallory.reject is not None and mallory.reject.code == wire.RejectCode.NICK_TAKEN
    assert [mb.addr for mb in relay.members.values()] == [("192.0.2.1", 1)]
    # the real alice, on a new address, proves it and resumes in place
    again = join(
        net, "alice", ("192.0.2.1", 2), seed=99, resume=stolen, resume_secret=alice.resume_secret
    )
    assert again.joined and relay.member_nicks() == ["alice"]
    assert not [x for x in again.received if isinstance(x, m.Left)]


def test_address_keys() -> None:
    assert host_key("127.0.0.1") == host_key("127.5.6.7") == "loopback"
    assert host_key("::1") == "loopback"
    assert host_key("198.51.100.1") == "198.51.100.1"
    assert prefix_key("198.51.100.1") == prefix_key("198.51.100.200") == "198.51.100.0/24"
    assert host_key("2001:db8::1") == host_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert host_key("::ffff:198.51.100.1") == "198.51.100.1"
    assert host_key("fe80::1%eth0") == "fe80::/64"
    assert address_key("2001:db8::1") != address_key("2001:db8::2")
    assert address_key("127.0.0.1") == address_key("127.9.9.9") == address_key("::1")
    assert prefix_key("2001:db8::1") == prefix_key("2001:db8::2") == "2001:db8::/64"


# --- the handshake buckets -------------------------------------------------------------------


def test_a_bucket_that_has_not_refilled_is_never_forgotten() -> None:
    table = BucketTable(rate=1.0, burst=3, max_keys=4, now=0.0)
    assert [table.take("attacker", 0.0) for _ in range(4)] == [True, True, True, False]
    for i in range(100):  # a hundred other keys: the attacker's empty bucket stays
        table.take(f"spoof{i}", 0.0)
    assert len(table) <= 4
    assert not table.take("attacker", 0.0)
    # once the least recently used bucket has refilled it may go, and a new key gets its own
    assert table.take("late", 10.0)
    assert len(table) <= 4


def test_many_hosts_cannot_reset_one_hosts_join_bucket() -> None:
    """protocol.md 4: new hosts share an overflow bucket rather than evicting a spent one."""
    config = RelayConfig(max_sources=20, handshake_burst=3, handshake_rate=0.01)
    net, relay = setup(config)
    attacker = [join(net, f"a{i}", ("203.0.113.1", 3000 + i)) for i in range(4)]
    assert [c.joined for c in attacker] == [True, True, True, False]
    for i in range(40):
        join(net, f"o{i}", (f"203.0.{114 + i // 200}.{i % 200 + 1}", 3000))
    again = join(net, "a9", ("203.0.113.1", 3999))
    assert again.reject is not None and again.reject.code == wire.RejectCode.TOO_MANY_ATTEMPTS
    assert len(relay.gate.join_buckets) <= config.max_sources


def test_spoofed_handshakes_from_a_victims_address_do_not_lock_it_out() -> None:
    """900 spoofed HELLOs a second, and JOINs with forged cookies, all carrying the victim's
    IP: they are answered (to the victim, who ignores them) and never drain its JOIN bucket."""
    net, relay = setup()
    victim_ip = "198.51.100.9"
    for i in range(900):
        net.inject((victim_ip, 10000 + i), RELAY, wire.encode_hello(i.to_bytes(8, "big")), i / 900)
    for i in range(300):
        challenge = wire.Challenge(i.to_bytes(8, "big"), bytes(20), relay.relay_key, False)
        forged = join_datagram(i.to_bytes(8, "big"), challenge, f"x{i}")
        net.inject((victim_ip, 20000 + i), RELAY, forged, i / 300)
    net.run(0.5)
    victim = join(net, "victim", (victim_ip, 40000))
    assert victim.joined
    net.run(0.6)
    assert relay.stats.rate_limited == 0 and relay.member_nicks() == ["victim"]


def test_answers_to_datagrams_that_prove_nothing_are_limited_per_host() -> None:
    config = RelayConfig(reply_burst=5, reply_rate=1.0)
    net, relay = setup(config)
    resets: list[Address] = []

    def tap(src: Address, dst: Address, data: bytes) -> None:
        if src == RELAY and isinstance(wire.decode_datagram(data), wire.Reset):
            resets.append(dst)

    net.taps.append(tap)
    for i in range(50):
        ping = stray_session(i.to_bytes(8, "big"))
        net.inject(("198.51.100.3", 5000 + i), RELAY, ping)
    net.run(0.1)
    assert len(resets) == 5
    assert relay.stats.unknown_session == 50


# --- answers are never much larger than what asked for them ------------------------------------


class ByteCount:
    """Bytes one address sends and receives on a simulated network, once attached as a tap."""

    def __init__(self, addr: Address) -> None:
        self.addr = addr
        self.sent = self.received = 0

    def __call__(self, src: Address, dst: Address, data: bytes) -> None:
        if src == self.addr:
            self.sent += len(data)
        elif dst == self.addr:
            self.received += len(data)


def _answer_ratio(requests: list[m.Message], room: int = 10) -> float:
    """Bytes the relay sends one member over the bytes it received from that member, from
    its HELLO on, while the member's requests arrive in as few datagrams as they fit."""
    net, _relay = setup(RelayConfig(max_members_per_host=100))
    others = [join(net, f"member{i:02}", (f"192.0.2.{i + 10}", 4000)) for i in range(room)]
    attacker_addr: Address = ("198.51.100.66", 4000)
    count = ByteCount(attacker_addr)
    net.taps.append(count)
    attacker = join(net, "mallory", attacker_addr)
    assert attacker.joined and all(o.joined for o in others)
    net.run(0.1)
    for message in requests:
        attacker.send(message)
    net.run(2.0)
    assert count.sent > 0
    return count.received / count.sent


@pytest.mark.parametrize(
    "name, requests",
    [
        ("who", [m.Who()] * 287),
        ("a few whos", [m.Who()] * 10),
        ("one who at a time", [m.Who()]),
        ("empty say", [m.Say("")] * 250),
        ("private to nobody", [m.PrivateSend("x", "y")] * 200),
        ("bad nick", [m.NickRequest("/")] * 250),
        ("taken nick", [m.NickRequest("member00")] * 250),
    ],
)
def test_no_request_pattern_gets_more_than_three_times_its_bytes(
    name: str, requests: list[m.Message]
) -> None:
    ratio = _answer_ratio(requests)
    assert ratio <= 3.0, (name, ratio)


def test_only_the_first_flood_refusal_of_a_burst_is_in_words() -> None:
    net, _relay = setup(RelayConfig(flood_burst=2, flood_rate=1.0))
    alice = join(net, "alice", ("192.0.2.1", 1))
    for i in range(6):
        alice.send(m.Say(f"s{i}"))
    net.run(0.5)
    answers = [x for x in alice.received if isinstance(x, (m.Posted, m.Refused))]
    assert [type(a).__name__ for a in answers] == ["Posted"] * 2 + ["Refused"] * 4
    texts = [a.text for a in answers if isinstance(a, m.Refused)]
    assert texts[0].startswith("flood control") and texts[1:] == ["", "", ""]
    net.run(1.5)  # a refill: the next burst is told in words again
    for i in range(3):
        alice.send(m.Say(f"t{i}"))
    net.run(0.5)
    later = [x for x in alice.received if isinstance(x, (m.Posted, m.Refused))][6:]
    assert isinstance(later[-1], m.Refused) and later[-1].text.startswith("flood control")


# --- protocol.md 6.3: the newcomer's history ----------------------------------------------------


@pytest.mark.parametrize("chats", range(46))
def test_a_newcomer_gets_the_most_recent_chat_events(chats: int) -> None:
    net, _relay = setup(RelayConfig(join_history=20, flood_burst=100, flood_rate=100.0))
    alice = join(net, "alice", ("192.0.2.1", 1))
    for i in range(chats):
        alice.send(m.Say(f"chat {i}"))
    net.run(1.0)
    bob = join(net, "bob", ("192.0.2.2", 2))
    net.run(0.5)
    history = [x.text for x in bob.of(m.ChatMessage)]
    assert history == [f"chat {i}" for i in range(max(0, chats - 20), chats)]


# --- protocol.md 6.1: exactly one answer per request ----------------------------------------


def _raw(*fields: object) -> bytes:
    return msgpack.packb(list(fields), use_bin_type=True)


def test_every_request_gets_exactly_one_answer_whatever_is_wrong_with_it() -> None:
    net, relay = setup(RelayConfig(flood_burst=100, flood_rate=100.0))
    alice = join(net, "alice", ("192.0.2.1", 1))
    bob = join(net, "bob", ("192.0.2.2", 2))
    assert alice.link is not None
    long_text = "x" * 17_000  # over MAX_TEXT_BYTES: does not decode
    requests = [
        (m.encode_message(m.Say(long_text)), m.Refused),
        (m.encode_message(m.Action(long_text)), m.Refused),
        (_raw(m.MessageKind.SAY, 42, b""), m.Refused),  # text of the wrong type
        (_raw(m.MessageKind.SAY), m.Refused),  # too few fields
        (m.encode_message(m.PrivateSend("bob", long_text)), m.Error),
        (_raw(m.MessageKind.NICK, b"not a str"), m.Error),
        (_raw(m.MessageKind.WHO, "extra"), m.Error),
        (m.encode_message(m.Say("fine")), m.Posted),
        (_raw(200, "no such kind"), None),  # not a request: no answer
        (_raw(m.MessageKind.QUIT, 7), None),
        (b"\xc1", None),
        (m.encode_message(m.Who()), m.Members),
    ]
    for data, _ in requests:
        alice.link.send(data)
    net.run(1.0)
    answers = [
        x
        for x in alice.received
        if isinstance(x, (m.Posted, m.Refused, m.Error, m.Members, m.Private))
    ]
    expected = [kind for _, kind in requests if kind is not None]
    assert [type(a) for a in answers] == expected
    assert "too long" in answers[0].text  # type: ignore[union-attr]
    assert [x.text for x in bob.of(m.ChatMessage)] == ["fine"]
    assert relay.member_nicks() == ["alice", "bob"]


def test_peek_kind_reads_the_kind_of_what_does_not_decode() -> None:
    assert m.peek_kind(m.encode_message(m.Say("x" * 20_000))) == m.MessageKind.SAY
    assert m.peek_kind(_raw(200, "")) == 200
    assert m.peek_kind(msgpack.packb([3] + [0] * 20)) == 3  # array16 header
    for junk in (b"", b"\x90", b"\x91", b"\x91\xd0", b"\xa1x", b"\xdc\x00\x00\x01"):
        assert m.peek_kind(junk) is None


# --- protocol.md 4.2: resuming is exactly-once ------------------------------------------------


def test_a_request_resent_on_a_new_session_is_answered_again_but_posted_once() -> None:
    net, relay = setup()
    alice = join(net, "alice", ("192.0.2.1", 1))
    bob = join(net, "bob", ("192.0.2.2", 2))
    say = m.Say("only once", b"msgid-01")
    private = m.PrivateSend("BOB", "psst", b"msgid-02")
    alice.send(say)
    alice.send(private)
    net.run(0.5)
    (posted,) = alice.of(m.Posted)
    first_private = alice.of(m.Private)[0]
    # the relay forgot alice's session (say it timed out): she comes back as a new join
    net.detach(("192.0.2.1", 1))
    relay.sessions.forget(next(mb for mb in relay.members.values() if mb.nick == "alice"))
    again = join(net, "alice", ("192.0.2.1", 3), seed=99)
    again.send(say)
    again.send(private)
    again.send(m.Say("new", b"msgid-03"))
    net.run(0.5)
    answers = [x for x in again.received if isinstance(x, (m.Posted, m.Private))]
    assert answers[0] == posted
    assert isinstance(answers[1], m.Private) and answers[1].to == "bob"
    assert answers[1].time == first_private.time
    assert isinstance(answers[2], m.Posted) and answers[2].seq > posted.seq
    assert [x.text for x in bob.of(m.ChatMessage)] == ["only once", "new"]
    assert [x.text for x in bob.of(m.Private)] == ["psst"]
    assert relay.stats.resent_requests == 2


def test_a_silent_member_stays_until_the_timeout_not_until_its_link_gives_up() -> None:
    """protocol.md 5.5, 7.1: the relay's link retransmits for as long as the member timeout
    runs, so a client that comes back within it resumes in place."""
    net, relay = setup(RelayConfig(heartbeat=1.0, timeout=10.0))
    alice = join(net, "alice", ("192.0.2.1", 1))
    bob = join(net, "bob", ("192.0.2.2", 2))
    net.set_path(RELAY, ("192.0.2.2", 2), PathModel(loss=1.0))
    net.set_path(("192.0.2.2", 2), RELAY, PathModel(loss=1.0))
    alice.send(m.Say("into the void"))
    net.run(8.0)
    assert relay.member_nicks() == ["alice", "bob"]
    net.run(3.0)
    assert relay.member_nicks() == ["alice"]
    (left,) = alice.of(m.Left)
    assert left.nick == "bob" and left.reason == m.LeaveReason.TIMEOUT
    del bob


def test_a_steady_stream_of_who_gets_at_most_three_times_its_bytes() -> None:
    """Counting from the HELLO hides nothing: after the handshake's credit is spent, the
    member lists a member gets are paid for by what it sends."""
    net, _relay = setup(RelayConfig(max_members_per_host=100, flood_rate=10.0))
    for i in range(60):
        join(net, f"member{i:02}", (f"192.0.2.{i + 10}", 4000))
    attacker_addr: Address = ("198.51.100.66", 4000)
    attacker = join(net, "mallory", attacker_addr)
    count = ByteCount(attacker_addr)
    net.run(0.5)
    net.taps.append(count)
    for _ in range(200):
        attacker.send(m.Who())
        net.run(0.1)
    lists = attacker.of(m.Members)
    assert 0 < len(lists) < 200 and len(lists[-1].members) == 61
    allowed = 3 * count.sent + AMPLIFICATION_FACTOR * wire.MIN_INITIAL_SIZE
    assert count.received <= allowed, (count.received, count.sent)


def test_requests_that_do_not_decode_are_flood_controlled_too() -> None:
    """protocol.md 6.5: the bucket is charged before anything else, unreadable requests
    included, and only the first refusal of a burst is in words."""
    net, relay = setup(RelayConfig(flood_burst=5, flood_rate=1.0))
    alice = join(net, "alice", ("192.0.2.1", 1))
    assert alice.link is not None
    attacker_addr: Address = ("192.0.2.1", 1)
    count = ByteCount(attacker_addr)
    net.taps.append(count)
    for _ in range(640):
        alice.link.send(b"\x91\x01")  # a SAY without its fields
    net.run(2.0)
    refusals = alice.of(m.Refused)
    assert len(refusals) == 640  # exactly one answer each
    worded = [r for r in refusals if r.text]
    assert len(worded) <= 6 and worded[-1].text.startswith("flood control")
    assert relay.stats.flood_refused >= 635
    assert count.received <= 3 * count.sent


def test_an_oversized_request_is_refused_as_too_long() -> None:
    net, relay = setup()
    alice = join(net, "alice", ("192.0.2.1", 1))
    assert alice.link is not None
    answers: list[m.RelayMessage] = []
    answer = relay.room.answer

    def spy(member: object, message: m.RelayMessage) -> bool:
        answers.append(message)
        return answer(member, message)  # type: ignore[arg-type]

    relay.room.answer = spy  # type: ignore[method-assign]
    # Link.send refuses it, so its fragments are sealed by hand (protocol.md 5.1); the
    # relay's ACKs then cover packets alice's own link never sent, so the answer is read
    # at the relay.
    message = m.encode_message(m.Say("x" * 70_000))
    pieces = [message[i : i + 1120] for i in range(0, len(message), 1120)]  # 63: one window
    for seq, piece in enumerate(pieces):
        fields = session_bytes.data_fields(0, 0, seq, int(seq < len(pieces) - 1), [piece])
        sealed = alice.link._cipher.seal(
            wire.DatagramType.DATA, alice.link.token, 10_000 + seq, fields
        )
        net.inject(("192.0.2.1", 1), RELAY, sealed, seq * 0.0001)
    net.run(0.5)
    (refused,) = answers
    assert isinstance(refused, m.Refused) and "too long" in refused.text
