"""The relay's key file, fingerprints, and the state directory they live in."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import stat
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from udpchat import state
from udpchat.identity import (
    IdentityError,
    default_key_path,
    fingerprint,
    key_file_name,
    load_or_create,
    load_relay_key,
    parse_fingerprint,
    public_key,
    relay_static_key,
)
from udpchat.seal import generate_passphrase

FINGERPRINT = r"[a-z2-7]{4}(-[a-z2-7]{4}){7}"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- the state directory ------------------------------------------------------------------------


@pytest.mark.unit
def test_state_dir_follows_xdg_state_home(tmp_path: Path) -> None:
    assert state.state_dir({"XDG_STATE_HOME": str(tmp_path)}) == tmp_path / "udpchat"


@pytest.mark.unit
def test_state_dir_defaults_to_local_state_and_ignores_a_relative_setting() -> None:
    expected = Path("/home/someone/.local/state/udpchat")
    assert state.state_dir({"HOME": "/home/someone"}) == expected
    assert state.state_dir({"HOME": "/home/someone", "XDG_STATE_HOME": ""}) == expected
    assert state.state_dir({"HOME": "/home/someone", "XDG_STATE_HOME": "rel/dir"}) == expected


@pytest.mark.unit
def test_the_suite_never_uses_the_real_state_dir(tmp_path: Path) -> None:
    assert state.state_dir() == tmp_path / "state" / "udpchat"
    assert default_key_path("127.0.0.1", 9000).parent == state.state_dir()


@pytest.mark.unit
def test_write_atomic_replaces_whole_files_and_leaves_no_temporaries(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file"
    state.write_atomic(target, b"one")
    assert target.read_bytes() == b"one"
    assert mode(target.parent) == 0o700 and mode(target) == 0o600
    state.write_atomic(target, b"two")
    assert target.read_bytes() == b"two"
    assert os.listdir(target.parent) == ["file"]


@pytest.mark.unit
def test_write_atomic_failing_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "file"
    state.write_atomic(target, b"old")

    def refuse(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="No space"):
        state.write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file"]


@pytest.mark.unit
def test_create_new_never_overwrites(tmp_path: Path) -> None:
    target = tmp_path / "key"
    assert state.create_new(target, b"first")
    assert not state.create_new(target, b"second")
    assert target.read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["key"]


# --- the key file ----------------------------------------------------------------------------


@pytest.mark.unit
def test_key_file_names_are_safe_for_every_address() -> None:
    assert key_file_name("127.0.0.1", 9000) == "relay-127.0.0.1-9000.key"
    assert key_file_name("::1", 9000) == "relay-__1-9000.key"
    assert key_file_name("fe80::1%eth0", 1) == "relay-fe80__1%eth0-1.key"
    assert key_file_name("../../etc", 2) == "relay-.._.._etc-2.key"
    assert "/" not in key_file_name("a/b", 3)


@pytest.mark.unit
def test_a_key_is_created_0600_on_first_start_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "udpchat" / "relay-127.0.0.1-9000.key"
    first = load_or_create(path)
    assert first.created
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert path.read_bytes() == first.private and len(first.private) == 32
    again = load_or_create(path)
    assert not again.created
    assert again.private == first.private and again.fingerprint == first.fingerprint
    assert relay_static_key(path) == first.private
    assert "private" not in repr(first) and first.private.hex() not in repr(first)


@pytest.mark.e2e
def test_relays_starting_together_share_one_key(tmp_path: Path) -> None:
    path = tmp_path / "relay.key"
    keys: list[bytes] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait(5)
        keys.append(relay_static_key(path))

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(keys) == 4 and len(set(keys)) == 1
    assert os.listdir(tmp_path) == ["relay.key"]


@pytest.mark.unit
def test_the_public_key_is_x25519s() -> None:
    private = X25519PrivateKey.generate()
    raw = private.private_bytes_raw()
    assert public_key(raw) == private.public_key().public_bytes_raw()


def write_key(path: Path, data: bytes, file_mode: int = 0o600) -> None:
    path.write_bytes(data)
    path.chmod(file_mode)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("data", "file_mode", "complaint"),
    [
        (os.urandom(32), 0o644, "is open to other users (mode 0644)"),
        (os.urandom(32), 0o640, "run 'chmod 600"),
        (os.urandom(32), 0o602, "is open to other users (mode 0602)"),
        (b"-----BEGIN OPENSSH PRIVATE KEY-----\n", 0o600, "it has more than 32 bytes"),
        (os.urandom(31), 0o600, "it has 31 bytes, a key has exactly 32"),
        (b"", 0o600, "it has 0 bytes"),
        (bytes(32), 0o600, "not a usable relay key (all zero bytes)"),
    ],
)
def test_a_bad_key_file_is_refused_clearly_and_never_overwritten(
    tmp_path: Path, data: bytes, file_mode: int, complaint: str
) -> None:
    path = tmp_path / "relay.key"
    write_key(path, data, file_mode)
    for load in (load_relay_key, load_or_create, relay_static_key):
        with pytest.raises(IdentityError) as caught:
            load(path)
        message = str(caught.value)
        assert complaint in message and str(path) in message
        assert "\n" not in message
    assert path.read_bytes() == data and mode(path) == file_mode


@pytest.mark.unit
def test_a_directory_is_not_a_key(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="not a regular file"):
        load_or_create(tmp_path)


@pytest.mark.unit
def test_a_missing_key_is_not_created_by_load(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_relay_key(tmp_path / "nothing.key")
    assert os.listdir(tmp_path) == []


# --- fingerprints ----------------------------------------------------------------------------


@pytest.mark.unit
def test_fingerprint_is_sha256_prefix_in_base32_groups() -> None:
    public = bytes(range(32))
    digest = hashlib.sha256(public).digest()[:20]
    symbols = base64.b32encode(digest).decode().lower()
    expected = "-".join(symbols[i : i + 4] for i in range(0, 32, 4))
    assert fingerprint(public) == expected
    # a fixed vector, so that another implementation can check itself against this one
    assert fingerprint(bytes(32)) == "mzuh-vlpy-mk6x-o3ep-ygfy-5h4o-eaej-ofef"


@pytest.mark.unit
def test_fingerprint_needs_32_bytes() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        fingerprint(b"short")


@pytest.mark.unit
@given(st.binary(min_size=32, max_size=32))
def test_fingerprints_round_trip_in_any_case_and_spacing(public: bytes) -> None:
    shown = fingerprint(public)
    assert re.fullmatch(FINGERPRINT, shown)
    assert parse_fingerprint(shown) == shown
    assert parse_fingerprint(shown.upper()) == shown
    assert parse_fingerprint(" " + shown.replace("-", " ") + "\n") == shown
    assert parse_fingerprint(shown.replace("-", "")) == shown
    assert parse_fingerprint(shown.replace("-", ":")) == shown
    assert parse_fingerprint(shown.replace("o", "0")) == shown


@pytest.mark.unit
@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("", "it has 0 letters and digits, a fingerprint has 32"),
        ("abcd-efgh", "it has 8 letters"),
        ("abcd-efgh-ijkl-mnop-qrst-uvwx-yz23-45678", "'8' cannot be in one"),
        ("abcd-efgh-ijkl-mnop-qrst-uvwx-yz23-4561", "'1' cannot be in one"),
        ("SHA256:abcdefghijklmnopqrstuvwxyz234567", "it has 38 letters"),
        ("abcd-efgh-ijkl-mnop-qrst-uvwx-yz23-4567-a", "it has 33 letters"),
    ],
)
def test_bad_fingerprints_say_what_is_wrong(text: str, complaint: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_fingerprint(text)
    assert complaint in str(caught.value)


@pytest.mark.unit
def test_a_room_key_is_not_taken_for_a_fingerprint() -> None:
    with pytest.raises(ValueError, match="looks like a room key"):
        parse_fingerprint(generate_passphrase(secrets.choice))
