"""``udpchat join --server A,B,...``: the relay list and its trust checks reach the client
(protocol.md 6.9); a bad list is one line; the help says how fail-over behaves."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from udpchat import events as ev
from udpchat.chat_client import ClientOptions
from udpchat.cli import app
from udpchat.identity import fingerprint, generate_private_key
from udpchat.known_relays import TrustStore
from udpchat.noise import public_key
from udpchat.render import json_line, plain_line
from udpchat.statusbar import LinkStatus

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[ClientOptions]:
    """The options ``udpchat join`` hands the client, instead of joining."""
    made: list[ClientOptions] = []

    def entry(options: ClientOptions, **kwargs: Any) -> int:
        made.append(options)
        return 0

    monkeypatch.setattr(importlib.import_module("udpchat.cli.join"), "run_client", entry)
    return made


def new_public() -> bytes:
    return public_key(generate_private_key())


def test_a_list_of_relays_reaches_the_client_in_order(calls: list[ClientOptions]) -> None:
    result = invoke("join", "bob", "--server", "127.0.0.1:9000, 127.0.0.2:9001,relay.example:7")
    assert result.exit_code == 0, result.output
    [options] = calls
    assert options.server == ("127.0.0.1", 9000)
    assert options.fallbacks == (("127.0.0.2", 9001), ("relay.example", 7))
    assert options.trust is None and options.trust_for is not None


def test_one_relay_is_as_before(calls: list[ClientOptions]) -> None:
    assert invoke("join", "bob", "--server", "127.0.0.1:9000").exit_code == 0
    [options] = calls
    assert options.fallbacks == () and options.trust is not None and options.trust_for is None


@pytest.mark.parametrize(
    ("servers", "complaint"),
    [
        ("127.0.0.1:9000,127.0.0.1:9000", "a relay is listed twice"),
        ("127.0.0.1:9000,", "invalid --server '127.0.0.1:9000,': an empty place"),
        ("127.0.0.1:9000,nowhere", "--server: invalid address 'nowhere'"),
        ("127.0.0.1:9000,[::1]:9001", "list relays of one address family"),
    ],
)
def test_a_bad_list_is_one_line(calls: list[ClientOptions], servers: str, complaint: str) -> None:
    result = invoke("join", "bob", "--server", servers)
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("udpchat: ") and complaint in lines[0]
    assert calls == []


def test_each_relay_of_the_list_is_checked_against_its_own_entry(
    calls: list[ClientOptions], tmp_path: Path
) -> None:
    """First use remembers a key per address; a relay whose key changed is refused, however
    well the other relay of the list is known, even with the same key as that one."""
    assert invoke("join", "bob", "--server", "127.0.0.1:9000,127.0.0.1:9001").exit_code == 0
    trust_for = calls[0].trust_for
    assert trust_for is not None
    a, b = ("127.0.0.1", 9000), ("127.0.0.1", 9001)
    key, other = new_public(), new_public()
    assert trust_for(a)(key) is None  # remembered for A only
    assert TrustStore().known(a) == key and TrustStore().known(b) is None
    assert trust_for(b)(other) is None  # B's first use: its own key
    refusal = trust_for(b)(key)  # A's key at B's address: B's key changed
    assert refusal is not None and "REFUSED" in refusal and "127.0.0.1:9001" in refusal
    assert trust_for(a)(key) is None


def test_relay_key_may_list_one_fingerprint_per_key(calls: list[ClientOptions]) -> None:
    first, second, stranger = new_public(), new_public(), new_public()
    pins = f"{fingerprint(first)},{fingerprint(second)}"
    servers = "127.0.0.1:9000,127.0.0.1:9001"
    assert invoke("join", "bob", "--server", servers, "--relay-key", pins).exit_code == 0
    trust_for = calls[0].trust_for
    assert trust_for is not None
    assert trust_for(("127.0.0.1", 9000))(first) is None
    assert trust_for(("127.0.0.1", 9001))(second) is None
    refusal = trust_for(("127.0.0.1", 9001))(stranger)
    assert refusal is not None
    assert f"not {fingerprint(first)} or {fingerprint(second)}" in refusal


def test_the_help_tells_how_fail_over_behaves() -> None:
    result = invoke("join", "--help")
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "HOST:PORT[,HOST:PORT...]" in text
    assert "moves to the next one of the list, round-robin" in text


def test_a_move_is_one_line_and_one_json_record() -> None:
    moved = ev.RelayMoved("127.0.0.1:9000", "127.0.0.1:9001", "the relay went silent", 1, 0.5, 2.25)
    line = plain_line(moved, now=0.0)
    assert line is not None
    assert line.endswith("-- relay 127.0.0.1:9000 went silent; moved to 127.0.0.1:9001")
    refused = ev.RelayMoved("[::1]:9000", "[::1]:9001", "its key was refused", 2, 1.0)
    line = plain_line(refused, now=0.0)
    assert line is not None and line.endswith(
        "-- relay [::1]:9000: its key was refused; moved to [::1]:9001"
    )
    assert json.loads(json_line(moved)) == {
        "type": "relay_moved",
        "relay": "127.0.0.1:9000",
        "to": "127.0.0.1:9001",
        "reason": "the relay went silent",
        "attempt": 1,
        "delay": 0.5,
        "silent_for": 2.25,
    }


def test_the_status_bar_counts_a_move_as_a_rejoin_under_way() -> None:
    status = LinkStatus(0.0, "joined")
    status = status.after(ev.RelayMoved("a:1", "b:2", "the relay went silent", 3, 2.0), 10.0)
    assert (status.state, status.attempt, status.attempt_at) == ("lost", 3, 12.0)
