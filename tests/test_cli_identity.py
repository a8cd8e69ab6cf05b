"""The command line's relay identity: key files, fingerprints, pinning and forgetting."""

from __future__ import annotations

import importlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.e2e_support import Process, RelayProcess, members
from udpchat import events as ev
from udpchat.cli import app
from udpchat.identity import (
    default_key_path,
    fingerprint,
    generate_private_key,
    load_relay_key,
    public_key,
)
from udpchat.known_relays import TrustStore
from udpchat.seal import generate_passphrase

pytestmark = pytest.mark.timeout(60)


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def fake_entry(monkeypatch: pytest.MonkeyPatch, name: str, function: str) -> list[Any]:
    """Replace the library entry point a command calls; keep the options it was given."""
    calls: list[Any] = []

    def entry(options: Any, **kwargs: Any) -> int:
        calls.append(options)
        return 0

    monkeypatch.setattr(importlib.import_module(name), function, entry)
    return calls


def error_line(result: Any, code: int = 1) -> str:
    """The one line a failed command printed; status 1 for a failure, 2 for a usage error."""
    assert result.exit_code == code, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("udpchat: "), result.stderr
    return str(lines[0])


def new_public() -> bytes:
    return public_key(generate_private_key())


# --- udpchat relay -----------------------------------------------------------------------------


@pytest.mark.unit
def test_relay_creates_its_key_and_prints_its_fingerprint(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_entry(monkeypatch, "udpchat.relay_server", "run_relay")
    path = default_key_path("127.0.0.1", 9000)
    first = invoke("relay")
    assert first.exit_code == 0, first.output
    key = load_relay_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    store = f"room store: sqlite:{path.with_suffix('.sqlite3')}\n"
    assert first.stderr == (
        f"relay key fingerprint: {key.fingerprint} (created now in {path})\n{store}"
    )
    again = invoke("relay")
    assert again.stderr == f"relay key fingerprint: {key.fingerprint} (from {path})\n{store}"
    assert load_relay_key(path) == key
    assert len(calls) == 2


@pytest.mark.unit
def test_relay_key_files_are_per_listen_address(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry(monkeypatch, "udpchat.relay_server", "run_relay")
    invoke("relay", "--host", "::1", "--port", "9001")
    invoke("relay", "--port", "9002")
    names = sorted(os.listdir(default_key_path("::1", 9001).parent))
    assert names == ["relay-127.0.0.1-9002.key", "relay-__1-9001.key"]


@pytest.mark.unit
def test_relay_identity_option_names_the_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_entry(monkeypatch, "udpchat.relay_server", "run_relay")
    path = tmp_path / "room" / "shared.key"
    result = invoke("relay", "--identity", str(path))
    assert result.exit_code == 0, result.output
    assert load_relay_key(path).fingerprint in result.stderr
    assert not default_key_path("127.0.0.1", 9000).exists()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("data", "file_mode", "complaint"),
    [
        (b"\x01" * 32, 0o644, "is open to other users (mode 0644)"),
        (b"ssh-ed25519 AAAA", 0o600, "is not a udpchat relay key: it has 16 bytes"),
    ],
)
def test_relay_refuses_a_bad_key_file_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: bytes, file_mode: int, complaint: str
) -> None:
    calls = fake_entry(monkeypatch, "udpchat.relay_server", "run_relay")
    path = tmp_path / "relay.key"
    path.write_bytes(data)
    path.chmod(file_mode)
    assert complaint in error_line(invoke("relay", "--identity", str(path)))
    assert calls == []
    assert path.read_bytes() == data and stat.S_IMODE(path.stat().st_mode) == file_mode


@pytest.mark.unit
def test_relay_hands_its_key_file_to_the_relay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = fake_entry(monkeypatch, "udpchat.relay_server", "run_relay")
    path = tmp_path / "relay.key"
    invoke("relay", "--identity", str(path))
    assert calls[0].static_key == path.read_bytes()


# --- udpchat join --relay-key ------------------------------------------------------------------


@pytest.fixture
def servers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[Any, ...]]]:
    """What every trust check the command line made was made for."""
    made: list[tuple[Any, ...]] = []
    original = TrustStore.for_server

    def for_server(self: TrustStore, address: Any, pinned: str | None = None) -> Any:
        made.append((self.path, address, pinned))
        return original(self, address, pinned)

    monkeypatch.setattr(TrustStore, "for_server", for_server)
    yield made


@pytest.mark.unit
def test_join_checks_the_relay_in_the_known_relays_file(
    monkeypatch: pytest.MonkeyPatch, servers: list[tuple[Any, ...]], tmp_path: Path
) -> None:
    fake_entry(monkeypatch, "udpchat.cli.join", "run_client")
    key = fingerprint(new_public())
    spoken = key.upper().replace("-", " ")
    assert invoke("join", "bob", "--server", "[::1]:9001", "--relay-key", spoken).exit_code == 0
    assert invoke("join", "bob").exit_code == 0
    known = tmp_path / "state" / "udpchat" / "known_relays"
    assert servers == [(known, ("::1", 9001), key), (known, ("127.0.0.1", 9000), None)]


@pytest.mark.unit
@pytest.mark.parametrize(
    ("fingerprint_text", "complaint"),
    [
        ("abcd-efgh", "invalid relay key fingerprint 'abcd-efgh': it has 8 letters and digits"),
        (generate_passphrase(secrets.choice), "looks like a room key (from 'udpchat keygen')"),
    ],
)
def test_join_refuses_a_bad_fingerprint_in_one_line(
    monkeypatch: pytest.MonkeyPatch, fingerprint_text: str, complaint: str
) -> None:
    calls = fake_entry(monkeypatch, "udpchat.cli.join", "run_client")
    assert complaint in error_line(invoke("join", "bob", "--relay-key", fingerprint_text), 2)
    assert calls == []


@pytest.mark.unit
def test_join_hands_the_trust_check_to_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_entry(monkeypatch, "udpchat.cli.join", "run_client")
    right, wrong = new_public(), new_public()
    invoke("join", "bob", "--relay-key", fingerprint(right))
    trust = calls[0].trust
    assert trust(right) is None
    assert "REFUSED" in trust(wrong)


# --- udpchat relay-key and udpchat forget-relay, in-process ----------------------------------


@pytest.mark.unit
def test_relay_key_prints_the_fingerprint_alone(tmp_path: Path) -> None:
    path = tmp_path / "relay.key"
    result = invoke("relay-key", "--identity", str(path))
    assert result.exit_code == 0, result.output
    shown = load_relay_key(path).fingerprint
    assert result.stdout == shown + "\n"
    assert f"udpchat join NICK --server 127.0.0.1:9000 --relay-key {shown}" in result.stderr
    wildcard = invoke("relay-key", "--host", "::", "--port", "7")
    assert "--server HOST:7 --relay-key" in wildcard.stderr


@pytest.mark.unit
def test_forget_relay_in_one_line_when_there_is_nothing_to_forget() -> None:
    line = error_line(invoke("forget-relay", "127.0.0.1:9000"))
    assert line.startswith("udpchat: no key is remembered for 127.0.0.1:9000 in ")
    assert "missing ':PORT'" in error_line(invoke("forget-relay", "localhost"), 2)


# --- subprocesses ------------------------------------------------------------------------------


def run(*args: str) -> Process:
    process = Process(*args)
    try:
        assert process.wait(30) is not None
    finally:
        process.cleanup()
    return process


@pytest.mark.e2e
def test_relay_key_command_creates_once_and_prints_the_same_fingerprint(tmp_path: Path) -> None:
    first = run("relay-key", "--port", "9009")
    assert first.proc.returncode == 0, first.stderr
    path = tmp_path / "state" / "udpchat" / "relay-127.0.0.1-9009.key"
    key = load_relay_key(path)
    assert first.stdout == [key.fingerprint]
    assert f"created now in {path}" in first.stderr[0]
    again = run("relay-key", "--port", "9009")
    assert again.stdout == [key.fingerprint]
    assert f"from {path}" in again.stderr[0]


@pytest.mark.e2e
def test_relay_key_command_refuses_a_foreign_file(tmp_path: Path) -> None:
    path = tmp_path / "id_ed25519"
    foreign = b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE\n"
    path.write_bytes(foreign)
    path.chmod(0o600)
    refused = run("relay-key", "--identity", str(path))
    assert refused.proc.returncode == 1
    assert refused.stdout == []
    assert refused.stderr == [
        f"udpchat: {path} is not a udpchat relay key: it has more than 32 bytes, a key has "
        "exactly 32; udpchat never overwrites it: move it away or give another --identity"
    ]
    assert path.read_bytes() == foreign


@pytest.mark.e2e
def test_forget_relay_command_forgets_one_relay(tmp_path: Path) -> None:
    store = TrustStore(tmp_path / "state" / "udpchat" / "known_relays")
    forgotten, kept = new_public(), new_public()
    store.remember(("::1", 9000), forgotten)
    store.remember(("127.0.0.1", 9000), kept)
    done = run("forget-relay", "[::1]:9000")
    assert done.proc.returncode == 0, done.stderr
    assert done.stdout == [
        f"forgot the key of [::1]:9000 (fingerprint {fingerprint(forgotten)}); the next "
        "'udpchat join' remembers the key the relay shows then"
    ]
    assert store.known(("::1", 9000)) is None
    assert store.known(("127.0.0.1", 9000)) == kept
    again = run("forget-relay", "[::1]:9000")
    assert again.proc.returncode == 1
    assert again.stderr == [f"udpchat: no key is remembered for [::1]:9000 in {store.path}"]


@pytest.mark.e2e
def test_relay_process_prints_its_fingerprint_and_keeps_it_across_restarts() -> None:
    fingerprints = []
    for _ in range(2):
        relay = RelayProcess("--store", "memory:")  # a new room each time: alice joins anew
        try:
            line = relay.wait_line(
                lambda s: s.startswith("relay key fingerprint: "), 5, stderr=True
            )
            fingerprints.append(line.split()[3])
            with members(relay.address, "alice") as [alice]:
                relay.interrupt()
                assert relay.wait(10) == 0
                alice.log.wait_event(ev.ConnectionLost, 5, lambda e: "shutting down" in e.reason)
        finally:
            relay.cleanup()
    key = load_relay_key(default_key_path("127.0.0.1", 0))
    assert fingerprints == [key.fingerprint, key.fingerprint]
