"""``--json`` output against its published schema: every event the client can emit, every
record the line front end writes itself, and the reference that documents them."""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tests.test_ui import Factory, run_lines
from udpchat import events as ev
from udpchat.render import json_line

DOCS = Path(__file__).resolve().parent.parent / "docs"
SCHEMA = json.loads((DOCS / "events.schema.json").read_text())
VALIDATOR = Draft202012Validator(SCHEMA)
T = 1_790_000_000.75

# One example of every event, with every optional field set and unset somewhere.
EXAMPLES: list[ev.ClientEvent] = [
    ev.Welcomed("alice", ("alice", "bob"), resumed=False),
    ev.MessageReceived(7, T, "bob", "hi \x1b[31m", action=True, history=True),
    ev.MessageReceived(8, T, "alice", "mine", own=True, local_id=3),
    ev.MessagePending(3, "mine", action=False),
    ev.MessageRefused(4, "spam", "flood control"),
    ev.PrivateReceived(T, "bob", "alice", "psst"),
    ev.MemberJoined(9, T, "carol"),
    ev.MemberLeft(10, T, "carol", "quit", "bye", history=True),
    ev.MembersJoined(12, T, ("dave", "erin"), ("frank",)),
    ev.MembersJoined(13, T, (), ("gina",), history=True),
    ev.MembersLeft(14, T, ("dave", "erin"), ("quit", "timed out"), ("bye", "timed out")),
    ev.MemberRenamed(11, T, "bob", "rob", own=False),
    ev.MembersListed(("alice", "rob")),
    ev.MembersChanged(("rob",), ("carol", "dave")),
    ev.HistoryGap(2, 5),
    ev.ErrorReported("no such nickname: nobody", request=5),
    ev.ErrorReported("the nickname alice is taken; trying alice_"),
    ev.ConnectionLost("the relay went silent"),
    ev.Reconnecting(2, 1.0),
    ev.RelayMoved("127.0.0.1:9000", "[::1]:9001", "the relay went silent", 1, 0.5),
    ev.JoinRejected(1, "the nickname alice is taken"),
    ev.Closed("left the room"),
]


def schema_types() -> set[str]:
    return {record["properties"]["type"]["const"] for record in SCHEMA["oneOf"]}


def check(line: str) -> dict[str, Any]:
    assert line.isascii() and "\n" not in line
    record = json.loads(line)
    errors = sorted(VALIDATOR.iter_errors(record), key=str)
    assert not errors, f"{record}: {[e.message for e in errors]}"
    return dict(record)


@pytest.mark.unit
def test_the_examples_cover_every_event_class() -> None:
    classes = set(typing.get_args(ev.ClientEvent))
    assert {type(event) for event in EXAMPLES} == classes


@pytest.mark.unit
@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
@pytest.mark.parametrize("line", [None, 4])
def test_every_event_matches_the_schema(event: ev.ClientEvent, line: int | None) -> None:
    record = check(json_line(event, line=line))
    if "time" in record:
        assert isinstance(record["time"], int)  # one kind of time for everyone's messages


@pytest.mark.unit
def test_every_schema_type_is_emitted_and_documented() -> None:
    emitted = {check(json_line(event))["type"] for event in EXAMPLES}
    assert emitted | {"stats", "help", "info"} == schema_types()
    reference = (DOCS / "json-events.md").read_text()
    for kind in schema_types():
        assert f"| `{kind}` |" in reference, kind


@pytest.mark.e2e
def test_a_whole_json_session_matches_the_schema() -> None:
    code, lines, _ = run_lines("hi\n/stats\n/help\n/nope\n/msg bob x\n/who\n", Factory(), "json")
    assert code == 3  # /nope
    kinds = [check(line)["type"] for line in lines]
    assert {"welcome", "pending", "message", "stats", "help", "error", "private", "who"} <= set(
        kinds
    )
    assert kinds[-1] == "closed"


@pytest.mark.unit
def test_the_schema_refuses_what_it_should() -> None:
    bad = [
        {"type": "message", "from": "bob"},  # fields missing
        {"type": "error", "text": "x", "line": 0},  # lines count from 1
        {"type": "closed", "reason": "x", "extra": 1},  # nothing undocumented
        {"type": "nonsense"},
    ]
    for record in bad:
        assert not VALIDATOR.is_valid(record), record
