"""The Noise handshakes udpchat uses: NK, and NKpsk0 in a room with a key (protocol.md 4, 8).

This follows the Noise Protocol Framework, revision 34 (https://noiseprotocol.org/noise.html),
sections 5.1 (CipherState), 5.2 (SymmetricState), 5.3 (HandshakeState) and 9 (psk), for
exactly two patterns with 25519, ChaChaPoly and BLAKE2s::

    NK:                 NKpsk0:
      <- s                <- s
      ...                 ...
      -> e, es            -> psk, e, es
      <- e, ee            <- e, ee

It is small on purpose: a general Noise library would bring every pattern and hide the split
keys, which udpchat needs raw to seal datagrams with packet-number nonces (udpchat.seal). A
test checks it against the ``noiseprotocol`` package on random inputs. Ephemeral keys are
passed in, so the cores keep their injected random source and test vectors are exact; an
``Ephemeral`` made ahead (its public half is a scalar multiplication, as costly as a DH)
takes that work out of the handshake's round trips.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from udpchat.errors import ProtocolError

__all__ = [
    "DHLEN",
    "HASHLEN",
    "NK",
    "NK_PSK0",
    "Ephemeral",
    "Initiator",
    "NoiseError",
    "Responder",
    "SplitKeys",
    "aead_nonce",
    "public_key",
    "rekey",
    "usable_public_key",
]

NK = b"Noise_NK_25519_ChaChaPoly_BLAKE2s"
NK_PSK0 = b"Noise_NKpsk0_25519_ChaChaPoly_BLAKE2s"
# Noise 4.1 and 4.3: 25519 keys and BLAKE2s digests are 32 bytes.
DHLEN = 32
HASHLEN = 32
KEY_SIZE = 32
TAG_SIZE = 16
# Noise 11.3: Rekey() encrypts zeros with the largest nonce, which no message may use.
REKEY_NONCE = 2**64 - 1


class NoiseError(ProtocolError, ValueError):
    """A handshake message that is malformed or does not authenticate."""


def aead_nonce(n: int) -> bytes:
    """Noise 12.3, ChaChaPoly: 32 bits of zeros, then the 64-bit counter little-endian."""
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


def rekey(key: bytes) -> bytes:
    """Noise 4.2 REKEY(k): the first 32 bytes of ENCRYPT(k, 2**64 - 1, empty ad, 32 zeros)."""
    return ChaCha20Poly1305(key).encrypt(aead_nonce(REKEY_NONCE), bytes(KEY_SIZE), b"")[:KEY_SIZE]


def public_key(private: bytes) -> bytes:
    """The X25519 public key of a 32-byte private key."""
    return _public(X25519PrivateKey.from_private_bytes(private))


def _public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


@lru_cache(maxsize=4)
def _static_pair(private: bytes) -> tuple[X25519PrivateKey, bytes]:
    """A responder's static key and its public half, made once: a relay answers every
    handshake with the same identity, and making them cost more than a DH (a scalar
    multiplication for the public half) at every join."""
    key = X25519PrivateKey.from_private_bytes(private)
    return key, _public(key)


class Ephemeral:
    """An ephemeral key pair, made before the handshake message that sends it: the public
    half costs as much as a DH, and a side that makes it while it waits for the other
    (a client while its HELLO is on the way, a relay between joins) answers sooner."""

    __slots__ = ("key", "public")

    def __init__(self, private: bytes) -> None:
        if len(private) != DHLEN:
            raise ValueError(f"an ephemeral key has {DHLEN} bytes")
        self.key = X25519PrivateKey.from_private_bytes(private)
        self.public = _public(self.key)


def _ephemeral(ephemeral: bytes | Ephemeral) -> Ephemeral:
    return ephemeral if isinstance(ephemeral, Ephemeral) else Ephemeral(ephemeral)


def _dh(private: X25519PrivateKey, public: bytes) -> bytes:
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(public))
    except ValueError:  # a low-order point gives an all-zero secret; cryptography refuses it
        raise NoiseError("unusable public key") from None


# Any valid private key: a static key checked against it shows whether a DH with it works.
_PROBE_KEY = X25519PrivateKey.from_private_bytes(bytes(range(1, DHLEN + 1)))


@lru_cache(maxsize=16)
def usable_public_key(public: bytes) -> bool:
    """Whether ``public`` is a 32-byte X25519 key that a DH can use (not a low-order point,
    whose shared secret is all zeros): a peer's static key is checked before it is trusted.

    Remembered for a few keys: a client checks its relay's key on every CHALLENGE, and the
    check is a DH (as costly as one of the handshake's own)."""
    if len(public) != DHLEN:
        return False
    try:
        _dh(_PROBE_KEY, public)
    except NoiseError:
        return False
    return True


def _hash(data: bytes) -> bytes:
    return hashlib.blake2s(data).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.blake2s).digest()


def _hkdf(chaining_key: bytes, ikm: bytes, outputs: int) -> tuple[bytes, ...]:
    """Noise 4.3 HKDF with HMAC-BLAKE2s, two or three outputs."""
    temp = _hmac(chaining_key, ikm)
    out1 = _hmac(temp, b"\x01")
    out2 = _hmac(temp, out1 + b"\x02")
    if outputs == 2:
        return out1, out2
    return out1, out2, _hmac(temp, out2 + b"\x03")


@dataclass(frozen=True, slots=True)
class SplitKeys:
    """Noise 5.2 Split(): ``initiator`` seals what the client sends, ``responder`` what the
    relay sends; ``handshake_hash`` is h at the end (channel binding)."""

    initiator: bytes
    responder: bytes
    handshake_hash: bytes


class _Symmetric:
    """Noise 5.1 and 5.2: CipherState and SymmetricState in one, as a handshake uses them."""

    __slots__ = ("ck", "h", "k", "n")

    def __init__(self, protocol: bytes, prologue: bytes) -> None:
        self.h = protocol.ljust(HASHLEN, b"\x00") if len(protocol) <= HASHLEN else _hash(protocol)
        self.ck = self.h
        self.k: bytes | None = None
        self.n = 0
        self.mix_hash(prologue)

    def mix_hash(self, data: bytes) -> None:
        self.h = _hash(self.h + data)

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = _hkdf(self.ck, ikm, 2)
        self.k, self.n = temp_k, 0

    def mix_key_and_hash(self, ikm: bytes) -> None:
        self.ck, temp_h, temp_k = _hkdf(self.ck, ikm, 3)
        self.mix_hash(temp_h)
        self.k, self.n = temp_k, 0

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        assert self.k is not None  # both patterns mix a key before any payload
        ciphertext = ChaCha20Poly1305(self.k).encrypt(aead_nonce(self.n), plaintext, self.h)
        self.n += 1
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        assert self.k is not None
        try:
            plaintext = ChaCha20Poly1305(self.k).decrypt(aead_nonce(self.n), ciphertext, self.h)
        except InvalidTag:
            raise NoiseError("handshake message does not authenticate") from None
        self.n += 1
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> SplitKeys:
        k1, k2 = _hkdf(self.ck, b"", 2)
        return SplitKeys(k1, k2, self.h)


def _start(relay_public: bytes, prologue: bytes, psk: bytes | None) -> _Symmetric:
    if len(relay_public) != DHLEN:
        raise ValueError(f"a relay key has {DHLEN} bytes")
    if psk is not None and len(psk) != KEY_SIZE:
        raise ValueError(f"a psk has {KEY_SIZE} bytes")
    state = _Symmetric(NK if psk is None else NK_PSK0, prologue)
    state.mix_hash(relay_public)  # the pre-message pattern "<- s"
    if psk is not None:
        state.mix_key_and_hash(psk)  # the "psk" token first in message 1 (psk0)
    return state


def _mix_ephemeral(state: _Symmetric, ephemeral_public: bytes, psk: bool) -> None:
    """The "e" token; Noise 9.2: in a psk handshake it is also mixed into the key."""
    state.mix_hash(ephemeral_public)
    if psk:
        state.mix_key(ephemeral_public)


class Initiator:
    """The client's side: writes message 1, reads message 2."""

    __slots__ = ("_e", "_psk", "_state", "message")

    def __init__(
        self,
        relay_public: bytes,
        prologue: bytes,
        psk: bytes | None,
        ephemeral: bytes | Ephemeral,
        payload: bytes,
    ) -> None:
        self._psk = psk is not None
        self._state = state = _start(relay_public, prologue, psk)
        pair = _ephemeral(ephemeral)
        self._e, e_public = pair.key, pair.public
        _mix_ephemeral(state, e_public, self._psk)
        state.mix_key(_dh(self._e, relay_public))  # es
        self.message = e_public + state.encrypt_and_hash(payload)
        """Message 1: the ephemeral key, then the encrypted payload."""

    def read_response(self, message: bytes) -> tuple[bytes, SplitKeys]:
        """Message 2's payload and the session keys; NoiseError if it does not authenticate.
        The state is not changed, so a copy of message 2 can be read again."""
        message = bytes(message)
        if len(message) < DHLEN + TAG_SIZE:
            raise NoiseError("handshake message too short")
        state = _Symmetric.__new__(_Symmetric)
        state.ck, state.h, state.k, state.n = (
            self._state.ck,
            self._state.h,
            self._state.k,
            self._state.n,
        )
        re_public = message[:DHLEN]
        _mix_ephemeral(state, re_public, self._psk)
        state.mix_key(_dh(self._e, re_public))  # ee
        payload = state.decrypt_and_hash(message[DHLEN:])
        return payload, state.split()


class Responder:
    """The relay's side: reads message 1 (the payload, to decide), then writes message 2."""

    __slots__ = ("_psk", "_re", "_state", "payload")

    def __init__(
        self, static_private: bytes, prologue: bytes, psk: bytes | None, message: bytes
    ) -> None:
        message = bytes(message)
        if len(message) < DHLEN + TAG_SIZE:
            raise NoiseError("handshake message too short")
        static, static_public = _static_pair(static_private)
        self._psk = psk is not None
        self._state = state = _start(static_public, prologue, psk)
        self._re = message[:DHLEN]
        _mix_ephemeral(state, self._re, self._psk)
        state.mix_key(_dh(static, self._re))  # es
        self.payload = state.decrypt_and_hash(message[DHLEN:])
        """Message 1's payload, authenticated."""

    def respond(self, ephemeral: bytes | Ephemeral, payload: bytes) -> tuple[bytes, SplitKeys]:
        """Message 2 carrying ``payload``, and the session keys."""
        state = self._state
        pair = _ephemeral(ephemeral)
        e, e_public = pair.key, pair.public
        _mix_ephemeral(state, e_public, self._psk)
        state.mix_key(_dh(e, self._re))  # ee
        message = e_public + state.encrypt_and_hash(payload)
        return message, state.split()
