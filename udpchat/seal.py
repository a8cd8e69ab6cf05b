"""Optional room key: datagrams sealed whole with ChaCha20-Poly1305, padded to a bucket.

Construction (protocol.md 8). A relay with a key draws a random 16-byte salt when it starts
and sends it in the clear in every CHALLENGE; the relay and each member derive the 256-bit
room key from the passphrase with scrypt (n=2**14, r=8, p=1) and the salt
``ROOM_KEY_SALT_PREFIX || relay salt``. The salt is per relay process so that no dictionary
precomputed once serves against every udpchat room; HELLO and CHALLENGE, which carry it, are
the only datagrams of a keyed room that are not sealed. A sealed datagram is the msgpack array
``[1, 15, nonce, ciphertext]`` (protocol version 1, type 15 = SEALED), where ``ciphertext`` is
the ChaCha20-Poly1305 (RFC 8439) encryption of the padded plaintext, 16-byte tag included.
The cores get a :data:`KeyDeriver` (passphrase bound, salt to Sealer), not a Sealer, since the
salt comes from the relay at run time.

Padding. The plaintext is the inner datagram framed and padded to a size bucket::

    plaintext = len(inner) as 2 bytes big-endian || inner || zero bytes, to a size in PAD_BUCKETS

An inner datagram is one msgpack value with nothing after it, so the length field is what
tells the receiver where the zeros start; it drops a plaintext whose size is not a bucket,
whose length field overruns it or whose padding is not zero. The buckets (64, 256, 512 and
1164 bytes, sealed 99, 292, 548 and 1200) follow the traffic: ACK, PING and the other control
datagrams fit the 64-byte one; DATA, which carries messages, is padded to at least 256 bytes,
where one chat line of up to about 200 bytes fits with its headers, so a "hi" and a
100-character line look the same; 512 holds medium lines and small bundles; 1164 is the
largest inner datagram that still seals into 1200 bytes (full fragments, big bundles, JOIN).
An observer learns a datagram's bucket, so whether it is DATA, and nothing finer about its
length. Padding costs bandwidth: a sealed ACK is 99 bytes instead of about 50.

What is authenticated: the inner datagram (confidential and intact), the version and type
(the 2-byte associated data ``b"\\x01\\x0f"``), the nonce (an input of the AEAD), and the
framing and padding (inside the ciphertext). What is not: which member sent it, since all
members hold the same key (the relay's nick stamping still matters); freshness, since a
captured datagram opens again when replayed (the inner protocol's sequence numbers must
discard duplicates); the bucket, which shows; and HELLO and CHALLENGE, which are not sealed,
so that an attacker on the path can hand a client a salt of its own choosing.

What the key does not hide or prevent: sizes to their bucket, timing and addresses; and
offline guessing. One captured sealed datagram and the salt from its room's CHALLENGE let
anyone test passphrases at one scrypt each, about 40 ms of one core, as many in parallel as
they have cores; the salt makes that work per room, not impossible. A key is as strong as the
passphrase's entropy: a random one of 128 bits or more is out of reach (``udpchat keygen``
prints one of 150, see :func:`generate_passphrase`), a word is not.

Nonces are 96 random bits, so no counter has to be shared between members. A repeated nonce
would leak the XOR of two plaintexts and allow forgeries; among q datagrams sealed under one
key it happens with probability below q**2 / 2**97, under 2**-33 for q = 2**32 datagrams (a
room sending 100 datagrams a second for a year seals about 2**31.6). A relay process has one
key: restart it (a new salt, so a new key) or change the passphrase long before 2**32.

The nonce source is injected so tests can be deterministic; the runtime passes ``os.urandom``.
"""

from __future__ import annotations

import secrets
import unicodedata
from collections.abc import Callable

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from udpchat.wire import MAX_DATAGRAM_SIZE, SALT_SIZE, DatagramType

__all__ = [
    "FRAME_HEADER_SIZE",
    "KEYGEN_BITS",
    "KEY_SIZE",
    "MAX_INNER_SIZE",
    "MESSAGE_BUCKET",
    "NONCE_SIZE",
    "PAD_BUCKETS",
    "ROOM_KEY_SALT_PREFIX",
    "SEALED_TYPE",
    "SEAL_OVERHEAD",
    "SEAL_VERSION",
    "TAG_SIZE",
    "KeyDeriver",
    "SealError",
    "Sealer",
    "derive_room_key",
    "generate_passphrase",
    "is_sealed",
    "pad",
    "padded_size",
    "room_key",
    "sealed_size",
    "unpad",
]

SEAL_VERSION = 1
SEALED_TYPE = 15
KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16

ROOM_KEY_SALT_PREFIX = b"udpchat room key v2"
"""Put before the relay's salt in the scrypt salt, so that udpchat keys are derived in a
space of their own."""
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1

FRAME_HEADER_SIZE = 2
PAD_BUCKETS = (64, 256, 512, 1164)
"""Sizes a sealed plaintext (framed and padded) may have; see the module docstring."""
MESSAGE_BUCKET = 256
"""The smallest bucket for DATA, so that short and ordinary chat lines look the same."""
MAX_INNER_SIZE = PAD_BUCKETS[-1] - FRAME_HEADER_SIZE
"""The largest inner datagram that can be sealed: 1162 bytes."""

_ASSOCIATED_DATA = bytes((SEAL_VERSION, SEALED_TYPE))
# What msgpack writes first for a sealed datagram: fixarray of 4, the two fixints, bin8 of 12.
_PREFIX = bytes((0x94, SEAL_VERSION, SEALED_TYPE, 0xC4, NONCE_SIZE))


class SealError(ValueError):
    """A datagram that is not a well-formed, authentic sealed datagram for this room key."""


KeyDeriver = Callable[[bytes], "Sealer"]
"""A room key bound to its passphrase: given a relay's salt, the Sealer for that relay. The
cores take one of these rather than a Sealer, since the salt comes from the relay."""


def _passphrase_bytes(passphrase: str) -> bytes:
    """The passphrase as scrypt takes it, NFC-normalised so that members typing the same
    accented text through different input methods still agree on the key."""
    if not passphrase:
        raise ValueError("a room passphrase cannot be empty")
    try:
        return unicodedata.normalize("NFC", passphrase).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a room passphrase cannot contain lone surrogates") from None


def derive_room_key(passphrase: str, salt: bytes) -> bytes:
    """Derive the 32-byte room key from ``passphrase`` and a relay's 16-byte ``salt``.

    Deliberately slow (scrypt, about 40 ms and 16 MiB): the cost is paid once per relay
    process and per member, and once per guess by anyone guessing the passphrase.
    """
    if len(salt) != SALT_SIZE:
        raise ValueError(f"a relay's salt has {SALT_SIZE} bytes, not {len(salt)}")
    kdf = Scrypt(
        salt=ROOM_KEY_SALT_PREFIX + salt, length=KEY_SIZE, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P
    )
    return kdf.derive(_passphrase_bytes(passphrase))


# RFC 4648 base32 in lower case: letters and 2 to 7, no 0, 1, 8 or 9 to take for O, l, B, g.
KEYGEN_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
KEYGEN_GROUPS = 6
KEYGEN_GROUP_SIZE = 5
KEYGEN_BITS = KEYGEN_GROUPS * KEYGEN_GROUP_SIZE * 5  # 150: 32 symbols carry 5 bits each


def generate_passphrase(choice: Callable[[str], str] = secrets.choice) -> str:
    """A random room passphrase of 150 bits, like ``k3mxq-7adp2-tzu4b-...``: six groups of
    five base32 characters, easy to read out and type. A passphrase is only as strong as its
    entropy against offline guessing (protocol.md 8.4); at 150 bits, guessing is hopeless
    however cheap scrypt becomes, where a word or a short phrase falls to a dictionary."""
    return "-".join(
        "".join(choice(KEYGEN_ALPHABET) for _ in range(KEYGEN_GROUP_SIZE))
        for _ in range(KEYGEN_GROUPS)
    )


def room_key(passphrase: str, nonce_source: Callable[[int], bytes]) -> KeyDeriver:
    """A :data:`KeyDeriver` for ``passphrase``; an unusable passphrase fails here, at once,
    rather than at the first CHALLENGE."""
    _passphrase_bytes(passphrase)

    def sealer_for(salt: bytes) -> Sealer:
        return Sealer(derive_room_key(passphrase, salt), nonce_source)

    return sealer_for


def sealed_size(plaintext_length: int) -> int:
    """Exact length of the sealed datagram for a plaintext (framed and padded) of
    ``plaintext_length`` bytes."""
    ciphertext = plaintext_length + TAG_SIZE
    if ciphertext < 2**8:
        bin_header = 2
    elif ciphertext < 2**16:
        bin_header = 3
    else:
        bin_header = 5
    return len(_PREFIX) + NONCE_SIZE + bin_header + ciphertext


SEAL_OVERHEAD = MAX_DATAGRAM_SIZE - MAX_INNER_SIZE
"""What sealing costs a full-size datagram: the 2-byte frame header and the 36 bytes of the
envelope, 38 in all. Links in a room with a key build datagrams of at most
``MAX_DATAGRAM_SIZE - SEAL_OVERHEAD`` bytes so that every sealed one fits in 1200."""
assert sealed_size(PAD_BUCKETS[-1]) == MAX_DATAGRAM_SIZE


def _carries_messages(inner: bytes) -> bool:
    """Is ``inner`` a DATA datagram? Read from the type byte of our own canonical encoding
    (an array header of 1, 3 or 5 bytes, then the version and type fixints); a wrong answer
    could only choose a different bucket."""
    if not inner:
        return False
    first = inner[0]
    if 0x90 <= first <= 0x9F:
        at = 1
    elif first == 0xDC:
        at = 3
    elif first == 0xDD:
        at = 5
    else:
        return False
    return len(inner) > at + 1 and inner[at + 1] == DatagramType.DATA


def padded_size(inner: bytes) -> int:
    """The bucket ``inner`` is padded to."""
    needed = len(inner) + FRAME_HEADER_SIZE
    if needed > PAD_BUCKETS[-1]:
        raise ValueError(
            f"a sealed datagram holds at most {MAX_INNER_SIZE} bytes, not {len(inner)}"
        )
    if _carries_messages(inner):
        needed = max(needed, MESSAGE_BUCKET)
    return next(bucket for bucket in PAD_BUCKETS if bucket >= needed)


def pad(inner: bytes) -> bytes:
    """Frame ``inner`` with its length and pad it with zeros to its bucket."""
    size = padded_size(inner)
    return (
        len(inner).to_bytes(FRAME_HEADER_SIZE, "big")
        + inner
        + bytes(size - FRAME_HEADER_SIZE - len(inner))
    )


def unpad(plaintext: bytes) -> bytes:
    """The inner datagram of a padded plaintext; :class:`SealError` if the framing is wrong."""
    if len(plaintext) not in PAD_BUCKETS:
        raise SealError(f"a padded plaintext of {len(plaintext)} bytes is not a bucket size")
    end = FRAME_HEADER_SIZE + int.from_bytes(plaintext[:FRAME_HEADER_SIZE], "big")
    if end > len(plaintext):
        raise SealError("the length field runs past the plaintext")
    if plaintext.count(0, end) != len(plaintext) - end:
        raise SealError("the padding is not zero")
    return plaintext[FRAME_HEADER_SIZE:end]


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

    def seal(self, inner: bytes) -> bytes:
        """Pad ``inner`` to its bucket, then encrypt and authenticate it into one sealed
        datagram."""
        nonce = self._nonce_source(NONCE_SIZE)
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"nonce source returned {len(nonce)} bytes, not {NONCE_SIZE}")
        ciphertext = self._aead.encrypt(nonce, pad(inner), _ASSOCIATED_DATA)
        return msgpack.packb([SEAL_VERSION, SEALED_TYPE, nonce, ciphertext], use_bin_type=True)

    def open(self, datagram: bytes) -> bytes:
        """Return the inner datagram of ``datagram``; raise :class:`SealError` for anything
        else."""
        nonce, ciphertext = _parse(datagram)
        try:
            plaintext = self._aead.decrypt(nonce, ciphertext, _ASSOCIATED_DATA)
        except InvalidTag:
            raise SealError("authentication failed: wrong room key or altered datagram") from None
        return unpad(plaintext)

    @staticmethod
    def sealed_length(inner: bytes) -> int:
        """How many bytes ``seal(inner)`` puts on the wire."""
        return sealed_size(padded_size(inner))


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
