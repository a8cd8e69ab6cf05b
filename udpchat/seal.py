"""Optional room key: every datagram sealed whole with ChaCha20-Poly1305.

Construction. Every member derives the same 256-bit key from the room passphrase with scrypt
(n=2**14, r=8, p=1) and the fixed salt ``ROOM_KEY_SALT``. The salt has to be fixed so members
agree without a handshake; the cost is that one precomputed dictionary serves against every
udpchat room, so a room key is only as strong as its passphrase. A sealed datagram is the
msgpack array ``[1, 15, nonce, ciphertext]`` (protocol version 1, type 15 = SEALED), where
``ciphertext`` is the ChaCha20-Poly1305 (RFC 8439) encryption of the whole inner datagram,
16-byte tag included.

What is authenticated: the inner datagram (confidential and intact), the version and type
(the 2-byte associated data ``b"\\x01\\x0f"``) and the nonce (an input of the AEAD). What is
not: which member sent it, since all members hold the same key (the relay's nick stamping
still matters); freshness, since a captured datagram opens again when replayed (the inner
protocol's sequence numbers must discard duplicates); and the length, which shows.

Nonces are 96 random bits, so no counter has to be shared between members. A repeated nonce
would leak the XOR of two plaintexts and allow forgeries; among q datagrams sealed under one
key it happens with probability below q**2 / 2**97, under 2**-33 for q = 2**32 datagrams (a
room sending 100 datagrams a second for a year seals about 2**31.6). Re-key (change the
passphrase) long before 2**32.

The nonce source is injected so tests can be deterministic; the runtime passes ``os.urandom``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

__all__ = [
    "KEY_SIZE",
    "NONCE_SIZE",
    "ROOM_KEY_SALT",
    "SEALED_TYPE",
    "SEAL_OVERHEAD",
    "SEAL_VERSION",
    "TAG_SIZE",
    "SealError",
    "Sealer",
    "derive_room_key",
    "is_sealed",
    "sealed_size",
]

SEAL_VERSION = 1
SEALED_TYPE = 15
KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16

ROOM_KEY_SALT = b"udpchat room key v1"
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1

SEAL_OVERHEAD = 36
"""Bytes that sealing adds to an n-byte plaintext: exact for 240 <= n < 65520, an upper bound
for smaller n (one byte less, the ciphertext then fitting a one-byte msgpack bin length).
Beyond 65519 it grows to 38, but such a datagram no longer fits in UDP anyway."""

_ASSOCIATED_DATA = bytes((SEAL_VERSION, SEALED_TYPE))
# What msgpack writes first for a sealed datagram: fixarray of 4, the two fixints, bin8 of 12.
_PREFIX = bytes((0x94, SEAL_VERSION, SEALED_TYPE, 0xC4, NONCE_SIZE))


class SealError(ValueError):
    """A datagram that is not a well-formed, authentic sealed datagram for this room key."""


def derive_room_key(passphrase: str) -> bytes:
    """Derive the 32-byte room key from ``passphrase``.

    The passphrase is NFC-normalised first so members typing the same accented text through
    different input methods still agree on the key.
    """
    if not passphrase:
        raise ValueError("a room passphrase cannot be empty")
    try:
        secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a room passphrase cannot contain lone surrogates") from None
    kdf = Scrypt(salt=ROOM_KEY_SALT, length=KEY_SIZE, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P)
    return kdf.derive(secret)


def sealed_size(plaintext_length: int) -> int:
    """Exact length of the sealed datagram for a plaintext of ``plaintext_length`` bytes."""
    ciphertext = plaintext_length + TAG_SIZE
    if ciphertext < 2**8:
        bin_header = 2
    elif ciphertext < 2**16:
        bin_header = 3
    else:
        bin_header = 5
    return len(_PREFIX) + NONCE_SIZE + bin_header + ciphertext


def is_sealed(datagram: bytes) -> bool:
    """Cheap triage: does ``datagram`` start the way every sealed datagram does?

    True does not mean it will open; only :meth:`Sealer.open` decides that.
    """
    return isinstance(datagram, bytes) and datagram.startswith(_PREFIX)


class Sealer:
    """Seals and opens datagrams under one room key."""

    __slots__ = ("_aead", "_nonce_source")

    def __init__(self, key: bytes, nonce_source: Callable[[int], bytes]) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"a room key has {KEY_SIZE} bytes, not {len(key)}")
        self._aead = ChaCha20Poly1305(key)
        self._nonce_source = nonce_source

    def seal(self, plaintext: bytes) -> bytes:
        """Encrypt and authenticate ``plaintext`` into one sealed datagram."""
        nonce = self._nonce_source(NONCE_SIZE)
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"nonce source returned {len(nonce)} bytes, not {NONCE_SIZE}")
        ciphertext = self._aead.encrypt(nonce, plaintext, _ASSOCIATED_DATA)
        return msgpack.packb([SEAL_VERSION, SEALED_TYPE, nonce, ciphertext], use_bin_type=True)

    def open(self, datagram: bytes) -> bytes:
        """Return the plaintext inside ``datagram``; raise :class:`SealError` for anything else."""
        nonce, ciphertext = _parse(datagram)
        try:
            return self._aead.decrypt(nonce, ciphertext, _ASSOCIATED_DATA)
        except InvalidTag:
            raise SealError("authentication failed: wrong room key or altered datagram") from None


def _parse(datagram: bytes) -> tuple[bytes, bytes]:
    # The prefix pins the array length, version, type and a 12-byte binary nonce, so msgpack
    # is left to check only that the ciphertext is binary and nothing trails it.
    if not is_sealed(datagram):
        raise SealError("not a sealed datagram (version, type or layout differ)")
    try:
        _, _, nonce, ciphertext = msgpack.unpackb(datagram, raw=False)
    # msgpack signals bad input with many exception types (ValueError, FormatError,
    # StackError, ExtraData, UnicodeDecodeError, ...): they all mean the same thing here.
    except Exception as exc:
        raise SealError(f"malformed sealed datagram: {type(exc).__name__}") from None
    if type(ciphertext) is not bytes or len(ciphertext) < TAG_SIZE:
        raise SealError(f"a ciphertext is binary of at least {TAG_SIZE} bytes")
    return nonce, ciphertext
