"""Trusting a relay's key: first use, same key, changed key, forgetting, pinning."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from udpchat.identity import fingerprint, generate_private_key, public_key
from udpchat.known_relays import TrustStore, default_path, forget_command, normalise_address

pytestmark = pytest.mark.unit

RELAY = ("127.0.0.1", 9000)


def new_public() -> bytes:
    return public_key(generate_private_key())


class Told:
    """A ``notify`` callback that keeps what it was told."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)


@pytest.fixture
def told() -> Told:
    return Told()


@pytest.fixture
def store(tmp_path: Path, told: Told) -> TrustStore:
    return TrustStore(tmp_path / "state" / "udpchat" / "known_relays", notify=told)


@pytest.mark.parametrize(
    ("address", "written"),
    [
        (("127.0.0.1", 9000), "127.0.0.1:9000"),
        (("Relay.Example.ORG.", 1), "relay.example.org:1"),
        (("::1", 9000), "[::1]:9000"),
        (("0:0:0:0:0:0:0:1", 9000), "[::1]:9000"),
        (("[::1]", 9000), "[::1]:9000"),
        (("FE80::1%eth0", 5), "[fe80::1%eth0]:5"),
    ],
)
def test_addresses_are_normalised(address: tuple[str, int], written: str) -> None:
    assert normalise_address(address) == written


def test_forget_command_is_safe_to_paste() -> None:
    assert forget_command(("127.0.0.1", 9000)) == "udpchat forget-relay 127.0.0.1:9000"
    assert forget_command(("::1", 9000)) == "udpchat forget-relay '[::1]:9000'"


def test_the_default_file_is_in_the_state_dir(tmp_path: Path) -> None:
    assert default_path() == tmp_path / "state" / "udpchat" / "known_relays"


def test_first_use_remembers_the_key_and_says_so(store: TrustStore, told: Told) -> None:
    key = new_public()
    trust = store.for_server(RELAY)
    assert trust(key) is None
    assert told.lines == [
        f"first connection to 127.0.0.1:9000; its key fingerprint is {fingerprint(key)} "
        f"(remembered in {store.path})"
    ]
    assert store.known(RELAY) == key
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    assert store.path.read_text() == f"127.0.0.1:9000 {base64.b64encode(key).decode()}\n"


def test_the_same_key_is_trusted_quietly(store: TrustStore, told: Told) -> None:
    key = new_public()
    assert store.for_server(RELAY)(key) is None
    told.lines.clear()
    for _ in range(3):
        assert TrustStore(store.path, notify=told).for_server(RELAY)(key) is None
    assert told.lines == []


def test_a_changed_key_is_refused_naming_both_fingerprints_and_the_cure(
    store: TrustStore, told: Told
) -> None:
    old, new = new_public(), new_public()
    trust = store.for_server(("::1", 9000))
    assert trust(old) is None
    told.lines.clear()
    refusal = trust(new)
    assert refusal is not None and "\n" not in refusal
    assert refusal.startswith("REFUSED: the key of relay [::1]:9000 has CHANGED")
    assert f"it was {fingerprint(old)}, it is now {fingerprint(new)}" in refusal
    assert "someone may be intercepting your connection" in refusal
    assert refusal.endswith("accept it with: udpchat forget-relay '[::1]:9000'")
    assert f"join with --relay-key {fingerprint(new)}" in refusal
    assert store.known(("::1", 9000)) == old  # nothing changed
    assert told.lines == []


def test_forget_then_the_new_key_is_accepted(store: TrustStore, told: Told) -> None:
    old, new = new_public(), new_public()
    other = ("relay.example.org", 9000)
    store.remember(other, old)
    trust = store.for_server(RELAY)
    assert trust(old) is None
    assert trust(new) is not None
    assert store.forget(RELAY) == old
    assert store.forget(RELAY) is None
    assert store.known(other) == old  # only that relay was forgotten
    told.lines.clear()
    assert trust(new) is None
    assert told.lines[0].startswith("first connection to 127.0.0.1:9000")
    assert store.known(RELAY) == new


def test_a_pinned_key_is_trusted_and_remembered(store: TrustStore, told: Told) -> None:
    old, new = new_public(), new_public()
    assert store.for_server(RELAY)(old) is None
    told.lines.clear()
    pinned = store.for_server(RELAY, pinned=fingerprint(new))
    assert pinned(new) is None  # the explicit pin overrides what was remembered
    assert told.lines == [
        f"relay 127.0.0.1:9000: key {fingerprint(new)} pinned with --relay-key "
        f"(remembered in {store.path})"
    ]
    assert store.known(RELAY) == new
    assert store.for_server(RELAY)(new) is None


def test_a_pinned_fingerprint_refuses_any_other_key(store: TrustStore) -> None:
    right, wrong = new_public(), new_public()
    refusal = store.for_server(RELAY, pinned=fingerprint(right))(wrong)
    assert refusal is not None and "\n" not in refusal
    assert refusal.startswith(
        f"REFUSED: relay 127.0.0.1:9000 has key fingerprint {fingerprint(wrong)}, "
        f"not {fingerprint(right)} as given with --relay-key"
    )
    assert store.known(RELAY) is None  # a refused key is not remembered
    assert not store.path.exists()


def test_a_malformed_key_is_refused(store: TrustStore) -> None:
    assert "malformed key (31 bytes)" in (store.for_server(RELAY)(bytes(31)) or "")


def test_other_lines_survive_rewrites(store: TrustStore) -> None:
    store.path.parent.mkdir(parents=True)
    foreign = ["# my relays", "", "garbage", "127.0.0.1:9000 not-base64!"]
    store.path.write_text("\n".join(foreign) + "\n")
    key = new_public()
    assert store.known(RELAY) is None
    store.remember(RELAY, key)
    store.remember(RELAY, key)
    assert store.path.read_text().splitlines() == [
        *foreign,
        f"127.0.0.1:9000 {base64.b64encode(key).decode()}",
    ]
    assert store.forget(RELAY) == key
    assert store.path.read_text().splitlines() == foreign


def test_an_unwritable_file_is_reported_and_the_key_trusted(
    store: TrustStore, told: Told, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(src: object, dst: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    key = new_public()
    assert store.for_server(RELAY)(key) is None
    assert len(told.lines) == 1
    assert "not remembered: cannot write" in told.lines[0] and "Permission denied" in told.lines[0]
    assert list(store.path.parent.iterdir()) == []


def test_an_unreadable_file_refuses_unless_pinned(store: TrustStore, told: Told) -> None:
    store.path.mkdir(parents=True)  # a directory cannot be read as a file
    key = new_public()
    refusal = store.for_server(RELAY)(key)
    assert refusal is not None and refusal.startswith("cannot read the known relays in")
    assert store.for_server(RELAY, pinned=fingerprint(key))(key) is None
    assert "not remembered" in told.lines[-1]
