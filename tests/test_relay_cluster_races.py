"""Several relays, one room (protocol.md 6.8): races between a member's resume on another
relay and the room noticing that its old relay died, and a moved member's old claim; relay
cores on one shared room in memory, real client sessions, the virtual clock."""

from __future__ import annotations

import pytest

from tests.client_support import drain, of
from tests.cluster_support import Forwarder, cluster, joined, left, relay_addr
from udpchat import events as ev
from udpchat.client.session import ClientSession
from udpchat.names import nick_key
from udpchat.relay.memory_shared import MemorySharedLog
from udpchat.relay.room_log import KeptMember

pytestmark = pytest.mark.unit

FRONT = ("10.0.2.1", 4000)  # the address the moving member knows as its relay


def order(session: ClientSession) -> list[str]:
    """The membership events a session was shown live, in order."""
    return [
        "joined" if isinstance(e, ev.MemberJoined) else "left"
        for e in of(session, ev.ClientEvent)
        if isinstance(e, (ev.MemberJoined, ev.MemberLeft))
    ]


@pytest.mark.parametrize("left_first", [True, False])
def test_a_resume_whose_record_the_lost_relay_handling_removed_is_announced_anew(
    monkeypatch: pytest.MonkeyPatch, left_first: bool
) -> None:
    """mo's relay B dies; her resume on C reads her record, and before C moves it there the
    room notices B's death and A takes B's members out (announcing mo as left before C's
    move, or after it). C announces her again: every relay has her, and the others were
    told she left and then joined, in that order."""
    c = cluster()
    front = Forwarder(c.net, FRONT, relay_addr(1))
    c.net.attach(FRONT, front)
    ann, mo, cy = c.join("ann", 0), c.join("mo", 1, via=FRONT), c.join("cy", 2)
    c.settle()
    for member in (ann, mo, cy):
        drain(member)
    relay_a, relay_b, relay_c = c.relays
    find = MemorySharedLog.find_member
    raced: list[KeptMember | None] = []

    def find_then_lose(log: MemorySharedLog, token: bytes) -> KeptMember | None:
        kept = find(log, token)
        if log is relay_c.log and not raced:
            raced.append(kept)
            c.room.lose(relay_b.log.relay_id)  # type: ignore[attr-defined]
            if left_first:  # A takes B's members out, and logs mo's LEFT, at once
                relay_a.handle_timer(c.net.now)
        return kept

    monkeypatch.setattr(MemorySharedLog, "find_member", find_then_lose)
    c.net.detach(relay_addr(1))
    front.target = relay_addr(2)
    assert c.net.run_until(lambda: relay_c.member_nicks() == ["cy", "mo"], 30)
    c.settle()
    c.net.run(2.0)
    assert raced and raced[0] is not None and raced[0].nick == "mo"  # the race happened
    assert relay_a.stats.relays_lost == 1
    for relay in (relay_a, relay_c):
        assert relay.sessions.nick_list() == ("ann", "cy", "mo")
    for other in (ann, cy):
        assert left(other) == ["mo"]
        # after the LEFT: every member lists her (and C's JOINED numbered before the lost
        # relay's LEFT is followed by another)
        assert joined(other) == (["mo"] if left_first else ["mo", "mo"])
        assert order(other) == (["left", "joined"] if left_first else ["joined", "left", "joined"])
        assert "mo" in other.members
    # mo herself, on C, reads the lost relay's LEFT of her: she is still in, and says nothing
    assert not left(mo) and "mo" in mo.members and sorted(mo.members) == ["ann", "cy", "mo"]
    assert c.room.claims[nick_key("mo")][1] == relay_c.log.relay_id
    assert [kept.nick for kept, rid in c.room.members.values() if rid == relay_c.log.relay_id] == [
        "cy",
        "mo",
    ]


def test_a_relay_told_its_member_moved_lets_the_old_nickname_go() -> None:
    """A claim of the old session that the old relay's store refreshed after the move (a
    store that keeps claims alive from the relay's own list) is let go when the relay learns
    of the move; the new session's claim stays."""
    c = cluster()
    front = Forwarder(c.net, FRONT, relay_addr(0))
    c.net.attach(FRONT, front)
    c.join("mo", 0, via=FRONT)
    c.settle()
    old_token = c.relays[0].sessions.by_nick["mo"].token
    released: list[tuple[str, bytes]] = []
    relay_a = c.relays[0]
    release = MemorySharedLog.release_nick

    def spy(log: MemorySharedLog, nick: str, token: bytes) -> None:
        if log is relay_a.log:
            released.append((nick, token))
        release(log, nick, token)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(MemorySharedLog, "release_nick", spy)
        front.target = relay_addr(1)
        assert c.net.run_until(lambda: c.relays[1].member_nicks() == ["mo"], 30)
        assert c.net.run_until(lambda: relay_a.member_nicks() == [], 5)
    assert released == [("mo", old_token)]
    new_token = c.relays[1].sessions.by_nick["mo"].token
    assert c.room.claims[nick_key("mo")] == (new_token, c.relays[1].log.relay_id)
