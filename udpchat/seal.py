"""Session datagrams sealed with the handshake's keys; the room key as a psk; padding.

Construction (protocol.md 8). The Noise handshake (udpchat.noise) gives one 32-byte key per
direction. Every session datagram (DATA, ACK, PING, PATH_CHALLENGE, PATH_RESPONSE) is::

    header = type (1 byte) || token (8 bytes) || pn (msgpack uint, shortest form)
    datagram = header || ChaCha20-Poly1305(key(pn), nonce(pn), plaintext, ad = header)
    nonce(pn) = 4 zero bytes || pn as 64-bit little-endian    (Noise's ChaChaPoly nonce)
    key(pn) = REKEY applied pn // rekey_interval times to the direction's key  (Noise 11.3)

The packet number is the nonce, as in QUIC (RFC 9001 5.3): every datagram a sender sends has
a packet number of its own, retransmissions included, so no (key, nonce) pair is ever used
twice, and the receiver's replay window runs on numbers that authenticate. The token and pn
stay in the clear (the relay routes by token; the receiver needs pn to open the datagram)
and are authenticated as associated data. Key phases move forward every ``rekey_interval``
packet numbers (2**32 by default, far below the 2**64 nonces), so a key never protects more
than that many datagrams; phases are derived on demand and only a few are kept.

Room key. The passphrase enters the handshake as Noise's psk, derived with scrypt under a salt
that includes the relay's static public key, so that a dictionary precomputed for one relay
is no use against another. In a room with a key the plaintext is also padded to a size bucket
(``pad``), so lengths show only as one of four sizes; without a room key nothing is padded.
"""

from __future__ import annotations

import functools
import struct
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from udpchat import session_bytes, wire
from udpchat.errors import ProtocolError
from udpchat.noise import rekey

__all__ = [
    "FRAME_HEADER_SIZE", "KEYGEN_BITS", "KEY_SIZE", "MESSAGE_BUCKET", "PAD_BUCKETS",
    "REKEY_INTERVAL", "ROOM_KEY_SALT_PREFIX", "SESSION_ENVELOPE", "TAG_SIZE", "DirectionKeys",
    "PskDeriver", "SealError", "SessionCipher", "SessionKeys", "derive_room_psk",
    "generate_passphrase", "pad", "padded_size", "room_key", "unpad",
]

KEY_SIZE = 32
TAG_SIZE = 16

ROOM_KEY_SALT_PREFIX = b"udpchat room key v3"
"""Put before the relay's static public key in the scrypt salt, so that udpchat keys are
derived in a space of their own, one per relay identity."""
SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1

# protocol.md 8.2: what a sealed session datagram adds to its plaintext at most: the type
# (1), the token (8), the pn (9 at most) and the tag.
SESSION_ENVELOPE = 1 + wire.TOKEN_SIZE + 9 + TAG_SIZE
FRAME_HEADER_SIZE = 2
PAD_BUCKETS = (64, 256, 512, 1152)
"""protocol.md 8.2: sizes a padded plaintext may have. The largest seals into at most 1186
bytes, within MAX_DATAGRAM_SIZE whatever the pn."""
MESSAGE_BUCKET = 256
"""The smallest bucket for DATA, so that short and ordinary chat lines look the same."""
assert PAD_BUCKETS[-1] + SESSION_ENVELOPE <= wire.MAX_DATAGRAM_SIZE

REKEY_INTERVAL = 2**32
"""protocol.md 8.1: packet numbers per key phase."""
MAX_PHASES_AHEAD = 16
"""A receiver derives keys at most this many phases past the newest that authenticated, so
that a forged pn cannot make it run REKEY billions of times."""
KEPT_PHASES = 2
"""Phases a receiver keeps behind the newest: reordered datagrams of the last phase open."""

CIPHER_CACHE = 256
"""AEAD contexts kept, for the keys used most recently (see ``_cipher``)."""

# A ChaCha20-Poly1305 context holds about 2.3 KB of the crypto library's memory, and each
# session has two keys: held per session, they were almost half of what an idle member cost
# a relay. Sessions keep their raw keys (32 bytes each) and take the context from here: a
# busy room's keys stay cached (a hit costs about 0.2 us), an idle member's context is
# rebuilt when its heartbeat comes (about 1.2 us), and the memory is bounded whatever the
# room's size. Contexts are safe to share between threads.
_cipher = functools.lru_cache(maxsize=CIPHER_CACHE)(ChaCha20Poly1305)


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """What a Link needs from the handshake: its two keys, and whether to pad."""

    send: bytes
    receive: bytes
    padded: bool


class SealError(ProtocolError, ValueError):
    """A session datagram that does not authenticate or whose padding is wrong."""


PskDeriver = Callable[[bytes], bytes]
"""A room key bound to its passphrase: given a relay's static public key, the 32-byte psk."""


def _passphrase_bytes(passphrase: str) -> bytes:
    """The passphrase as scrypt takes it, NFC-normalised so that members typing the same
    accented text through different input methods still agree on the key."""
    if not passphrase:
        raise ValueError("a room passphrase cannot be empty")
    try:
        return unicodedata.normalize("NFC", passphrase).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a room passphrase cannot contain lone surrogates") from None


def derive_room_psk(passphrase: str, relay_key: bytes) -> bytes:
    """The 32-byte psk for ``passphrase`` at the relay whose static public key is
    ``relay_key``. Deliberately slow (scrypt, about 40 ms and 16 MiB): paid once per relay
    identity by each member, and once per guess by anyone guessing the passphrase."""
    if len(relay_key) != wire.RELAY_KEY_SIZE:
        raise ValueError(f"a relay key has {wire.RELAY_KEY_SIZE} bytes, not {len(relay_key)}")
    kdf = Scrypt(
        salt=ROOM_KEY_SALT_PREFIX + relay_key, length=KEY_SIZE, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P
    )
    return kdf.derive(_passphrase_bytes(passphrase))


def room_key(passphrase: str) -> PskDeriver:
    """A :data:`PskDeriver` for ``passphrase``; an unusable passphrase fails here, at once,
    rather than at the first CHALLENGE."""
    _passphrase_bytes(passphrase)
    return lambda relay_key: derive_room_psk(passphrase, relay_key)


# RFC 4648 base32 in lower case: letters and 2 to 7, no 0, 1, 8 or 9 to take for O, l, B, g.
KEYGEN_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
KEYGEN_GROUPS = 6
KEYGEN_GROUP_SIZE = 5
KEYGEN_BITS = KEYGEN_GROUPS * KEYGEN_GROUP_SIZE * 5  # 150: 32 symbols carry 5 bits each


def generate_passphrase(choice: Callable[[str], str]) -> str:
    """A random room passphrase of 150 bits, like ``k3mxq-7adp2-tzu4b-...``: six groups of
    five base32 characters, easy to read out and type, each drawn with ``choice`` (the caller
    passes a CSPRNG, ``secrets.choice``). A passphrase is only as strong as its entropy
    against offline guessing (protocol.md 9); at 150 bits, guessing is hopeless however cheap
    scrypt becomes, where a word or a short phrase falls to a dictionary."""
    return "-".join(
        "".join(choice(KEYGEN_ALPHABET) for _ in range(KEYGEN_GROUP_SIZE))
        for _ in range(KEYGEN_GROUPS)
    )


def padded_size(length: int, minimum: int = 0) -> int:
    """The bucket a plaintext of ``length`` bytes is padded to (at least ``minimum``)."""
    needed = max(length + FRAME_HEADER_SIZE, minimum)
    for bucket in PAD_BUCKETS:
        if bucket >= needed:
            return bucket
    raise ValueError(
        f"a padded plaintext holds at most {PAD_BUCKETS[-1] - FRAME_HEADER_SIZE} bytes, "
        f"not {length}"
    )


def pad(inner: bytes, minimum: int = 0) -> bytes:
    """Frame ``inner`` with its length (2 bytes, big-endian) and pad it with zeros to its
    bucket, at least ``minimum`` bytes."""
    size = padded_size(len(inner), minimum)
    return (
        len(inner).to_bytes(FRAME_HEADER_SIZE, "big")
        + inner
        + bytes(size - FRAME_HEADER_SIZE - len(inner))
    )


def unpad(plaintext: bytes) -> bytes:
    """The framed bytes of a padded plaintext; :class:`SealError` if the framing is wrong."""
    if len(plaintext) not in PAD_BUCKETS:
        raise SealError(f"a padded plaintext of {len(plaintext)} bytes is not a bucket size")
    end = FRAME_HEADER_SIZE + int.from_bytes(plaintext[:FRAME_HEADER_SIZE], "big")
    if end > len(plaintext):
        raise SealError("the length field runs past the plaintext")
    if plaintext.count(0, end) != len(plaintext) - end:
        raise SealError("the padding is not zero")
    return plaintext[FRAME_HEADER_SIZE:end]


class DirectionKeys:
    """The keys of one direction of a session, by key phase (protocol.md 8.1).

    Phases are derived forward from the oldest one kept, never more than
    ``MAX_PHASES_AHEAD`` past the newest confirmed; ``confirm`` (after a datagram
    authenticated, or was sent) forgets the phases more than ``KEPT_PHASES`` behind.
    ``current`` is the newest confirmed phase's key: nearly every datagram is of that phase,
    and takes it without a lookup.
    """

    __slots__ = ("_base", "_confirmed", "_interval", "_keys", "current")

    def __init__(self, key: bytes, interval: int = REKEY_INTERVAL) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError(f"a session key has {KEY_SIZE} bytes")
        if interval < 1:
            raise ValueError("the rekey interval must be at least 1")
        self._interval = interval
        self._base = 0  # the oldest phase kept
        self._confirmed = 0  # the newest phase in use
        # the keys of phases _base, _base + 1, ...: a list, not a dict by phase, and None
        # (that list would be [current]) until a phase other than the first is asked for: a
        # session that never rekeys, nearly all of them, keeps its key alone (a relay keeps
        # two per member)
        self._keys: list[bytes] | None = None
        self.current = key  # the key of phase _confirmed

    def phase_of(self, pn: int) -> int:
        return pn // self._interval

    def key(self, phase: int) -> bytes | None:
        """The key of ``phase``, or None if it is forgotten or too far ahead."""
        index = phase - self._base
        if index < 0 or phase > self._confirmed + MAX_PHASES_AHEAD:
            return None
        keys = self._kept()
        while len(keys) <= index:  # derived forward from the newest kept
            keys.append(rekey(keys[-1]))
        return keys[index]

    def confirm(self, phase: int) -> None:
        """``phase`` is in use: forget the phases well behind it."""
        if phase <= self._confirmed:
            return
        keys = self._kept()
        self._confirmed = phase
        self.current = keys[phase - self._base]
        floor = phase - KEPT_PHASES
        if floor > self._base:
            del keys[: floor - self._base]
            self._base = floor

    def _kept(self) -> list[bytes]:
        """The keys kept, by phase from ``_base``."""
        keys = self._keys
        if keys is None:  # only the first phase's so far, which is current
            keys = self._keys = [self.current]
        return keys


# protocol.md 3: a session header's first byte, by type; a pn's msgpack uint below 128.
_BYTE = session_bytes.BYTE
# Noise 12.3 (udpchat.noise.aead_nonce) in one call: 4 zero bytes, the pn little-endian.
_nonce = struct.Struct("<4xQ").pack


class SessionCipher:
    """Seals what one end sends and opens what it receives, for one session."""

    __slots__ = ("padded", "receiving", "sending")

    def __init__(
        self, send_key: bytes, receive_key: bytes, padded: bool, interval: int = REKEY_INTERVAL
    ) -> None:
        self.sending = DirectionKeys(send_key, interval)
        self.receiving = DirectionKeys(receive_key, interval)
        self.padded = padded

    @property
    def max_plaintext(self) -> int:
        """The largest field plaintext that still seals into MAX_DATAGRAM_SIZE."""
        if self.padded:
            return PAD_BUCKETS[-1] - FRAME_HEADER_SIZE
        return wire.MAX_DATAGRAM_SIZE - SESSION_ENVELOPE

    def seal(self, kind: wire.DatagramType, token: bytes, pn: int, fields: bytes) -> bytes:
        """The session datagram carrying ``fields`` (the msgpack array of its fields after
        the packet number), sealed under the key phase of ``pn``. ``token`` is the session's
        (TOKEN_SIZE bytes: the link checked it once)."""
        keys = self.sending
        if pn // keys._interval == keys._confirmed:
            found: bytes | None = keys.current
        else:  # a new key phase (every REKEY_INTERVAL packet numbers)
            phase = keys.phase_of(pn)
            found = keys.key(phase)
            assert found is not None, "a sender's packet numbers only grow"
            keys.confirm(phase)
        if self.padded:
            fields = pad(fields, MESSAGE_BUCKET if kind is wire.DatagramType.DATA else 0)
        header = _BYTE[kind] + token + (_BYTE[pn] if pn < 0x80 else session_bytes.encode_uint(pn))
        return header + _cipher(found).encrypt(_nonce(pn), fields, header)

    def open(self, envelope: wire.Protected) -> bytes:
        """The field plaintext of ``envelope``; SealError if it does not authenticate."""
        keys = self.receiving
        pn = envelope.pn
        phase = pn // keys._interval
        if phase == keys._confirmed:
            found: bytes | None = keys.current
            phase = -1  # the newest confirmed already: nothing to confirm
        else:
            found = keys.key(phase)
            if found is None:
                raise SealError("packet number outside the key phases kept")
        header = envelope.header or session_bytes.session_header(envelope.kind, envelope.token, pn)
        try:
            plaintext = _cipher(found).decrypt(_nonce(pn), envelope.sealed, header)
        except InvalidTag:
            raise SealError("authentication failed") from None
        if phase >= 0:
            keys.confirm(phase)
        return unpad(plaintext) if self.padded else plaintext
