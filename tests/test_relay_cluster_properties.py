"""Several relays, one room (protocol.md 6.8), as properties: whatever the interleaving of
posts, joins, leaves, renames and store outages on three relays, one order and one room."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.client_support import of
from tests.cluster_support import CONFIG, Forwarder, chat, cluster, relay_addr
from udpchat import events as ev
from udpchat.client.session import ClientSession
from udpchat.client.states import SessionState
from udpchat.sim import PathModel

pytestmark = pytest.mark.unit


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    posts=st.lists(
        st.tuples(st.integers(0, 5), st.sampled_from([0.0, 0.0004, 0.002, 0.01])),
        min_size=1,
        max_size=24,
    ),
    seed=st.integers(0, 2**16),
)
def test_any_interleaving_of_posts_on_three_relays_is_one_order_everywhere(
    posts: list[tuple[int, float]], seed: int
) -> None:
    c = cluster(seed=seed, model=PathModel(delay=0.001, jitter=0.003))
    members = [c.join(nick, i % 3) for i, nick in enumerate(("ann", "bo", "cy", "di", "ed", "fa"))]
    for n, (who, pause) in enumerate(posts):
        members[who].say(f"{n}", c.net.now)
        if pause:
            c.net.run(pause)
    c.settle(20.0)
    seen = [chat(member) for member in members]
    assert all(s == seen[0] for s in seen)
    assert sorted(int(t) for _, t in seen[0]) == list(range(len(posts)))
    numbers = [seq for seq, _ in seen[0]]
    assert numbers == sorted(set(numbers))


def room_view(session: ClientSession) -> list[tuple[int, str]]:
    """(seq, what) of every live room event a member was shown, its own posts included."""
    out: list[tuple[int, str]] = []
    for e in of(session, ev.ClientEvent):  # type: ignore[arg-type]
        seq = getattr(e, "seq", None)
        if seq is None or getattr(e, "history", False):
            continue
        # what every member is shown alike (a batch naming a member is shown without it)
        fields = ("text", "nick", "old", "new") if not isinstance(e, ev.MembersJoined) else ()
        out.append((seq, repr((type(e).__name__, *(getattr(e, f, None) for f in fields)))))
    return out


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(
                ["say", "say", "say", "join", "quit", "nick", "move", "move", "away", "back"]
            ),
            st.integers(0, 8),
            st.sampled_from([0.0, 0.001, 0.01, 0.05]),
        ),
        min_size=1,
        max_size=20,
    ),
    batched=st.booleans(),
    seed=st.integers(0, 2**16),
)
# Found by this property, kept: a rename and a move while the store is away; a leave while
# a join batch waits for the store; moves before the join was announced; a QUIT sent as its
# member moved.
@example(
    steps=[("say", 0, 0.05), ("move", 1, 0.05), ("away", 0, 0.0), ("nick", 1, 0.0)]
    + [("say", 0, 0.01)] * 4
    + [("say", 1, 0.05)],
    batched=True,
    seed=11074,
)
@example(steps=[("away", 0, 0.0), ("quit", 1, 0.01)], batched=True, seed=1)
@example(steps=[("move", 1, 0.05), ("move", 1, 0.0), ("move", 1, 0.0)], batched=True, seed=6)
@example(steps=[("move", 0, 0.0), ("quit", 0, 0.0)], batched=False, seed=0)
@example(
    steps=[("quit", 0, 0.0), ("nick", 1, 0.0), ("move", 1, 0.0), ("away", 0, 0.01)],
    batched=True,
    seed=0,
)
def test_any_interleaving_of_comings_goings_and_posts_is_one_room(
    steps: list[tuple[str, int, float]], batched: bool, seed: int
) -> None:
    """Members joining, leaving, renaming, posting and moving to another relay on three
    relays at once, the store going away and coming back: every member sees the events of
    its time in the room in one order, and lists the same members."""
    config = replace(CONFIG, batch_notices_above=2 if batched else 16)
    c = cluster(seed=seed, config=config, model=PathModel(delay=0.001, jitter=0.002))
    fronts: dict[ClientSession, Forwarder] = {}

    def enter(nick: str, relay: int) -> ClientSession:
        """A member behind an address of its own, which can move it to another relay."""
        front_addr = (f"10.0.2.{len(fronts) + 1}", 4000)
        front = Forwarder(c.net, front_addr, relay_addr(relay))
        c.net.attach(front_addr, front)
        session = c.start(nick, relay, via=front_addr)
        fronts[session] = front
        return session

    live = [enter(nick, i % 3) for i, nick in enumerate(("ann", "bo", "cy"))]
    assert c.net.run_until(lambda: all(s.state is SessionState.JOINED for s in live), 5)
    for n, (what, who, pause) in enumerate(steps):
        if what in ("away", "back"):  # the store out of reach, or back
            c.room.available = what == "back"
        elif what == "join" or not live:
            live.append(enter(f"new{n}", n % 3))
        else:
            member = live[who % len(live)]
            if member.state is not SessionState.JOINED:
                pass
            elif what == "say":
                member.say(f"{n}", c.net.now)
            elif what == "quit":
                member.quit("bye", c.net.now)
                live.remove(member)
            elif what == "move":
                front = fronts[member]
                front.target = relay_addr((int(front.target[0].rsplit(".", 1)[1]) - 1 + 1) % 3)
            else:
                member.change_nick(f"r{n}", c.net.now)
        if pause:
            c.net.run(pause)
    c.room.available = True
    c.net.run(1.0)
    refused = [s for s in live if of(s, ev.JoinRejected)]  # joined while the store was away
    members = [s for s in live if s not in refused]
    assert c.net.run_until(lambda: all(s.state is SessionState.JOINED for s in members), 30)
    c.net.run(CONFIG.timeout + 1)  # a QUIT sent as its member moved reached nobody
    c.settle(20.0)
    assert all(s.state is SessionState.CLOSED for s in refused)
    assert all(s.state is SessionState.JOINED for s in members)
    views = [dict(room_view(s)) for s in members]
    for view in views:  # where two members both saw an event, they saw the same one
        for other in views:
            assert all(other[seq] == what for seq, what in view.items() if seq in other)
    for s in members:
        numbers = [seq for seq, _ in room_view(s)]
        assert numbers == sorted(set(numbers))
    expected = tuple(sorted(s.nick for s in members))
    for relay in c.relays:
        assert relay.sessions.nick_list() == expected
    for s in members:
        assert tuple(sorted(s.members)) == expected
