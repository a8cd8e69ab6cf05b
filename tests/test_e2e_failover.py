"""Client fail-over with real processes (protocol.md 6.9): a warm standby on the same SQLite
store. Relay A runs with ``--store sqlite:F`` and a key file; ``udpchat join --server A,B``
members chat; A is killed with SIGKILL mid-burst; relay B starts on another port with the
same store and key; the members move to B by themselves and resume there."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from tests.e2e_support import JsonProcess, Process, Recorder, RelayProcess, running_relay
from udpchat import events as ev
from udpchat.chat_client import ChatClient, ClientOptions
from udpchat.endpoint import Address

pytestmark = pytest.mark.e2e

BURST = 30  # messages alice types, some before the kill, some after
LIMITS = ("--flood-burst", "10000", "--flood-rate", "10000")


def free_udp_port() -> int:
    """A loopback UDP port nothing listens on (it was free a moment ago)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def label(address: Address) -> str:
    return f"{address[0]}:{address[1]}"


def chat(member: JsonProcess) -> list[tuple[int, str, str]]:
    return [(r["seq"], r["from"], r["text"]) for r in member.of("message")]


def after_move(member: JsonProcess) -> list[dict[str, Any]]:
    """The records that came after the member's move."""
    records = member.records()
    moved = next(i for i, r in enumerate(records) if r["type"] == "relay_moved")
    return records[moved + 1 :]


@pytest.mark.timeout(90)
def test_members_move_to_a_warm_standby_and_lose_nothing(tmp_path: Path) -> None:
    store = tmp_path / "room.sqlite3"
    identity = tmp_path / "relay.key"
    args = ("--store", f"sqlite:{store}", "--identity", str(identity), *LIMITS)
    standby: Address = ("127.0.0.1", free_udp_port())
    processes: list[Process] = []
    try:
        first = RelayProcess(*args)
        processes.append(first)
        servers = f"{label(first.address)},{label(standby)}"
        nicks = ("alice", "bob", "carol")
        alice, bob, carol = (
            JsonProcess("join", nick, "--server", servers, "--json") for nick in nicks
        )
        for member in (alice, bob, carol):
            processes.append(member)
            member.wait_record("welcome", 10)
        texts = [f"alice {i}" for i in range(BURST)]
        alice.send(*texts[: BURST // 2])
        carol.wait_records("message", 5, 10)  # mid-burst: part posted, part in flight
        first.kill()
        alice.send(*texts[BURST // 2 :])  # typed while A is dead: queued, sent to B later
        second = RelayProcess(*args, port=standby[1])
        processes.append(second)
        for member in (alice, bob, carol):
            moved = member.wait_record("relay_moved", 15)
            assert (moved["relay"], moved["to"]) == (label(first.address), label(standby))
            assert moved["reason"] == "the relay went silent"
        for member in (bob, carol):
            member.wait_records("message", BURST, 30)
        alice.wait_records("message", BURST, 30)  # her own, as the relays posted them
        orders = []
        for member in (alice, bob, carol):
            seen = chat(member)
            assert [text for _, _, text in seen] == texts, "not every message once, in order"
            numbers = [seq for seq, _, _ in seen]
            assert numbers == sorted(set(numbers))
            later = after_move(member)
            kinds = {r["type"] for r in later}
            assert not kinds & {"leave", "leaves", "join", "joins", "history_gap"}, later
            assert not kinds & {"connection_lost", "reconnecting", "refused", "closed"}, later
            assert next(r for r in later if r["type"] == "welcome")["nick"] == member.args[1]
            assert not member.of("leave") and not member.of("leaves")
            orders.append(seen)
        assert orders[0] == orders[1] == orders[2]  # one room order, across both relays
        assert len(alice.of("relay_moved")) == 1
        second.wait_line(lambda s: "alice rejoined from" in s, 5, stderr=True)
    finally:
        for process in processes:
            process.cleanup()


@pytest.mark.timeout(30)
def test_a_first_join_refused_by_the_system_goes_on_to_the_next_relay() -> None:
    """Nothing listens at the first address: the port-unreachable the system reports moves
    the join to the next relay, and the client talks to it alone from then on."""
    with running_relay() as relay:
        log = Recorder()
        nowhere: Address = ("127.0.0.1", free_udp_port())
        options = ClientOptions(nick="alice", server=nowhere, fallbacks=(relay.address,))
        client = ChatClient(options, log).start()
        try:
            assert client.wait_joined(10), log.snapshot()
            assert client._session.server == relay.address
            assert client._driver.peer == relay.address
            client.say("here")
            assert log.wait_for(lambda events: any(
                isinstance(e, ev.MessageReceived) and e.own for e in events
            ), 5)
            assert not log.of(ev.Closed)
        finally:
            client.close()


@pytest.mark.timeout(30)
def test_a_first_join_refused_everywhere_ends_at_once_naming_every_relay() -> None:
    first, second = ("127.0.0.1", free_udp_port()), ("127.0.0.1", free_udp_port())
    log = Recorder()
    client = ChatClient(ClientOptions(nick="alice", server=first, fallbacks=(second,)), log)
    client.start()
    try:
        assert client.wait_closed(8)  # the system's refusals, not the 10 s join timeout
        closed = log.wait_event(ev.Closed, 5)
        assert closed.reason.startswith(f"nothing is listening at {label(first)}, {label(second)}")
    finally:
        client.close()
