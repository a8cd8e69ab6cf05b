"""A member reads a LEFT that names itself only in a shared room's race (protocol.md 6.8): a
relay that died is announced by another after the member moved on. It is still in the room:
its list keeps it, and it is not told that it left."""

from __future__ import annotations

import pytest

from udpchat import events as ev
from udpchat import messages as msg
from udpchat.client.config import ClientConfig, Counters
from udpchat.client.cursor import RoomCursor
from udpchat.client.ledger import Ledger
from udpchat.client.room import RoomView

pytestmark = pytest.mark.unit

DROPPED = msg.LeaveReason.DROPPED


def welcomed_view(nick: str, members: tuple[str, ...]) -> tuple[RoomView, list[ev.ClientEvent]]:
    events: list[ev.ClientEvent] = []
    cursor = RoomCursor(events.append)
    ledger = Ledger(ClientConfig(nick, ("127.0.0.1", 9000)), events.append, 0.0)
    view = RoomView(nick, cursor, ledger, Counters(), events.append, 0.0)
    welcome = msg.Welcome(nick, members, 10, 1, 0, len(members))
    cursor.on_welcome(welcome, b"epoch-01")
    view.welcome(welcome)
    return view, events


def test_a_live_left_naming_ourselves_is_not_shown_and_keeps_us_listed() -> None:
    view, events = welcomed_view("Mo", ("ann", "Mo"))
    view.on_message(msg.Left(11, 0, "mo", DROPPED, "their relay was lost"), 1.0)
    assert view.members == ("ann", "Mo")
    assert not [e for e in events if isinstance(e, ev.MemberLeft)]
    view.on_message(msg.Left(12, 0, "ann", DROPPED, "their relay was lost"), 1.0)
    assert view.members == ("Mo",)  # others' leaves as ever


def test_a_left_batch_naming_ourselves_names_only_the_others() -> None:
    view, events = welcomed_view("mo", ("ann", "bo", "mo"))
    batch = msg.LeftBatch(11, 0, ("ann", "MO", "bo"), (2, 2, 1), ("lost", "lost", "bye"))
    view.on_message(batch, 1.0)
    assert view.members == ("mo",)
    (shown,) = [e for e in events if isinstance(e, ev.MembersLeft)]
    assert shown.nicks == ("ann", "bo") and shown.texts == ("lost", "bye")
    assert shown.reasons == (msg.leave_reason_words(DROPPED), msg.leave_reason_words(1))
    view.on_message(msg.LeftBatch(12, 0, ("mo",), (2,), ("lost",)), 1.0)
    assert view.members == ("mo",)
    assert len([e for e in events if isinstance(e, ev.MembersLeft)]) == 1
