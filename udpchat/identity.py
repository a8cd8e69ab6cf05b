"""Who a relay is: its long-term X25519 key, kept in a file, and the fingerprint people compare.

A relay proves who it is with a static X25519 key pair (the relay's key in a Noise NK
handshake). Members remember its public key the first time they meet it
(:mod:`udpchat.known_relays`); for that to mean anything the key must outlive a restart, so
the private key lives in a file in the state directory, named after the address the relay
listens on, and is created on first start.

The file holds exactly the 32 bytes of the private key, with mode 0600. A file that anyone
else may read or write, that has another size, or that is not a usable key is refused with a
message that says what to do, and is never overwritten: losing a relay's key makes every
member that pinned it refuse the relay.

A **fingerprint** is what people compare, aloud or on a web page: the first 160 bits of
SHA-256 over the 32-byte public key, in lowercase base32 (RFC 4648: letters a-z, digits 2-7,
no 0, 1, 8 or 9 to confuse with letters), in eight groups of four, e.g.
``q3vz-7dkm-a2ne-xw5h-jr4t-ub6c-l7so-fy2i``. 160 bits keep finding another key with the same
fingerprint out of reach; base32 survives being read out and typed in any case. Anyone can
recompute one from a public key ``K`` (32 bytes)::

    sha256(K)[:20] | base32 | lowercase | groups of 4 joined by "-"
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from udpchat.errors import UsageError
from udpchat.state import create_new, state_dir

__all__ = [
    "FINGERPRINT_ALPHABET", "FINGERPRINT_BYTES", "FINGERPRINT_GROUP", "FINGERPRINT_LENGTH",
    "KEY_SIZE", "IdentityError", "RelayKey", "default_key_path", "fingerprint",
    "generate_private_key", "key_file_name", "load_or_create", "load_relay_key",
    "parse_fingerprint", "public_key", "relay_static_key",
]

KEY_SIZE = 32
FINGERPRINT_BYTES = 20
FINGERPRINT_GROUP = 4
FINGERPRINT_LENGTH = FINGERPRINT_BYTES * 8 // 5  # 32 base32 symbols
FINGERPRINT_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_SEPARATORS = re.compile(r"[\s\-_:.]+")
_ROOM_KEY_SHAPE = re.compile(r"[a-z2-7]{5}(-[a-z2-7]{5}){5}")
_NOT_IN_A_NAME = re.compile(r"[^A-Za-z0-9._%-]")


class IdentityError(UsageError):
    """A relay key file that cannot be used; the message is one line that says what to do."""


@dataclass(frozen=True)
class RelayKey:
    """A relay's private key, where it came from, and whether it was just created."""

    path: Path
    private: bytes = field(repr=False)
    created: bool = False

    @property
    def public(self) -> bytes:
        return public_key(self.private)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public)


def key_file_name(host: str, port: int) -> str:
    """The key file's name for a relay listening on ``host`` and ``port``.

    ``relay-127.0.0.1-9000.key``; an IPv6 address's colons become underscores
    (``relay-__1-9000.key`` for ``::1``), which no host name or IPv4 address contains, and
    anything else that does not belong in a file name becomes an underscore too.
    """
    return f"relay-{_NOT_IN_A_NAME.sub('_', host)}-{port}.key"


def default_key_path(host: str, port: int) -> Path:
    """Where ``udpchat relay --host HOST --port PORT`` keeps its key unless told otherwise."""
    return state_dir() / key_file_name(host, port)


def public_key(private: bytes) -> bytes:
    """The 32-byte X25519 public key of a 32-byte private key."""
    return X25519PrivateKey.from_private_bytes(private).public_key().public_bytes_raw()


def generate_private_key() -> bytes:
    return X25519PrivateKey.generate().private_bytes_raw()


def load_relay_key(path: Path) -> RelayKey:
    """Read and check an existing key file; ``FileNotFoundError`` if there is none."""
    fd = os.open(path, os.O_RDONLY)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise IdentityError(f"relay key {path} is not a regular file")
        if info.st_mode & 0o077:
            raise IdentityError(
                f"relay key {path} is open to other users (mode "
                f"{stat.S_IMODE(info.st_mode):04o}): a private key must be private; "
                f"if nobody else could have read it, run 'chmod 600 {path}'"
            )
        data = _read_at_most(fd, KEY_SIZE + 1)
    finally:
        os.close(fd)
    if len(data) != KEY_SIZE:
        size = f"{len(data)} bytes" if len(data) <= KEY_SIZE else "more than 32 bytes"
        raise IdentityError(
            f"{path} is not a udpchat relay key: it has {size}, a key has exactly "
            f"{KEY_SIZE}; udpchat never overwrites it: move it away or give another --identity"
        )
    if data == bytes(KEY_SIZE):
        raise IdentityError(
            f"{path} is not a usable relay key (all zero bytes); udpchat never overwrites "
            "it: move it away or give another --identity"
        )
    return RelayKey(path, data)


def _read_at_most(fd: int, limit: int) -> bytes:
    data = b""
    while len(data) < limit:
        chunk = os.read(fd, limit - len(data))
        if not chunk:
            break
        data += chunk
    return data


def load_or_create(path: Path) -> RelayKey:
    """The key in ``path``, created (mode 0600, in a 0700 directory) if there is none.

    Two relays starting at once with the same file end up with the same key.
    """
    try:
        return load_relay_key(path)
    except FileNotFoundError:
        pass
    private = generate_private_key()
    if create_new(path, private):
        return RelayKey(path, private, created=True)
    return load_relay_key(path)  # another process created it first: use theirs


def relay_static_key(path: Path) -> bytes:
    """The 32-byte private key for ``RelayOptions.static_key``, from (or created in) ``path``."""
    return load_or_create(path).private


def fingerprint(public: bytes) -> str:
    """The fingerprint people compare for the 32-byte public key ``public``."""
    if len(public) != KEY_SIZE:
        raise ValueError(f"a relay public key has {KEY_SIZE} bytes, not {len(public)}")
    digest = hashlib.sha256(public).digest()[:FINGERPRINT_BYTES]
    return _grouped(base64.b32encode(digest).decode("ascii").lower())


def _grouped(symbols: str) -> str:
    step = FINGERPRINT_GROUP
    return "-".join(symbols[i : i + step] for i in range(0, len(symbols), step))


def parse_fingerprint(text: str) -> str:
    """The canonical form of a fingerprint as someone typed it; ``ValueError`` says what is wrong.

    Case, spaces and separators (``-``, ``_``, ``:``, ``.``) do not matter, and a digit 0
    is read as the letter o, since base32 has no 0. A 1 stays an error: it could be an i or
    an l.
    """
    given = text.strip()
    if _ROOM_KEY_SHAPE.fullmatch(given.lower()):
        raise ValueError(
            f"{given!r} looks like a room key (from 'udpchat keygen'), not a relay key "
            "fingerprint: 'udpchat relay-key' on the relay prints its fingerprint"
        )
    symbols = _SEPARATORS.sub("", given).lower().replace("0", "o")
    wrong = sorted({ch for ch in symbols if ch not in FINGERPRINT_ALPHABET})
    if wrong:
        shown = ", ".join(repr(ch) for ch in wrong)
        raise ValueError(
            f"invalid relay key fingerprint {given!r}: {shown} cannot be in one "
            "(letters a-z and digits 2-7 only)"
        )
    if len(symbols) != FINGERPRINT_LENGTH:
        raise ValueError(
            f"invalid relay key fingerprint {given!r}: it has {len(symbols)} letters and "
            f"digits, a fingerprint has {FINGERPRINT_LENGTH} (8 groups of 4)"
        )
    return _grouped(symbols)
