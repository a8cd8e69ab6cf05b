"""Sealed session datagrams (protocol.md 8): packet-number nonces, associated data, key
phases, padding, and the room key's psk."""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from hypothesis import given
from hypothesis import strategies as st

from udpchat import session_bytes, wire
from udpchat.noise import aead_nonce, rekey
from udpchat.seal import (
    KEY_SIZE,
    MAX_PHASES_AHEAD,
    MESSAGE_BUCKET,
    PAD_BUCKETS,
    SESSION_ENVELOPE,
    TAG_SIZE,
    DirectionKeys,
    SealError,
    SessionCipher,
    derive_room_psk,
    pad,
    padded_size,
    room_key,
    unpad,
)

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]

KEY = bytes(range(KEY_SIZE))
OTHER_KEY = bytes(range(1, KEY_SIZE + 1))
TOKEN = b"T" * 8
DATA = wire.DatagramType.DATA
ACK = wire.DatagramType.ACK
MAX_FIELDS = PAD_BUCKETS[-1] - 2


def pair(padded: bool = False, interval: int = 2**32) -> tuple[SessionCipher, SessionCipher]:
    """Two ends of one session: what one sends, the other opens."""
    return (
        SessionCipher(KEY, OTHER_KEY, padded, interval),
        SessionCipher(OTHER_KEY, KEY, padded, interval),
    )


def envelope(datagram: bytes) -> wire.Protected:
    decoded = wire.decode_datagram(datagram)
    assert isinstance(decoded, wire.Protected)
    return decoded


@given(st.binary(max_size=MAX_FIELDS), st.booleans(), st.integers(0, 2**32 - 1))
def test_round_trip(fields: bytes, padded: bool, pn: int) -> None:
    alice, bob = pair(padded)
    sealed = alice.seal(DATA, TOKEN, pn, fields)
    assert len(sealed) <= wire.MAX_DATAGRAM_SIZE
    assert bob.open(envelope(sealed)) == fields


def test_layout_nonce_and_associated_data_follow_the_protocol() -> None:
    """type || token || pn || sealed; nonce = 4 zero bytes || pn little-endian; associated
    data = the header as sent, type || token || pn (a msgpack uint, shortest form)."""
    alice, _ = pair()
    datagram = alice.seal(ACK, TOKEN, 300, session_bytes.ack_fields(5, 0))
    e = envelope(datagram)
    assert (e.kind, e.token, e.pn) == (ACK, TOKEN, 300)
    assert aead_nonce(300) == bytes(4) + (300).to_bytes(8, "little")
    header = b"\x07" + TOKEN + b"\xcd\x01\x2c"
    assert datagram == header + e.sealed
    plain = ChaCha20Poly1305(KEY).decrypt(aead_nonce(300), e.sealed, header)
    assert plain == session_bytes.ack_fields(5, 0)


@given(st.binary(min_size=1, max_size=200), st.data())
def test_every_change_to_the_header_or_the_ciphertext_is_detected(
    fields: bytes, data: st.DataObject
) -> None:
    alice, bob = pair()
    datagram = bytearray(alice.seal(DATA, TOKEN, 7, fields))
    i = data.draw(st.integers(0, len(datagram) - 1))
    datagram[i] ^= 1 << data.draw(st.integers(0, 7))
    try:
        tampered = wire.decode_datagram(bytes(datagram))
    except wire.DecodeError:
        return  # no longer even a datagram
    if not isinstance(tampered, wire.Protected):
        return
    with pytest.raises(SealError):
        bob.open(tampered)


def test_the_header_is_bound_token_pn_and_type() -> None:
    alice, bob = pair()
    e = envelope(alice.seal(ACK, TOKEN, 9, session_bytes.ack_fields(0, 0)))
    for other in (
        wire.Protected(wire.DatagramType.PING, e.token, e.pn, e.sealed),
        wire.Protected(e.kind, b"U" * 8, e.pn, e.sealed),
        wire.Protected(e.kind, e.token, 10, e.sealed),
    ):
        with pytest.raises(SealError):
            bob.open(other)
    assert bob.open(e) == session_bytes.ack_fields(0, 0)


def test_each_direction_has_its_own_key() -> None:
    """A datagram reflected back at its sender does not open: the directions' keys differ."""
    alice, _ = pair()
    e = envelope(alice.seal(ACK, TOKEN, 1, session_bytes.ack_fields(0, 0)))
    with pytest.raises(SealError):
        alice.open(e)


def test_padding_hides_lengths_to_a_bucket() -> None:
    alice, bob = pair(padded=True)
    sizes = {len(alice.seal(DATA, TOKEN, 1, bytes(n))) for n in range(0, 250)}
    assert sizes == {1 + 8 + 1 + MESSAGE_BUCKET + TAG_SIZE}
    ack = envelope(alice.seal(ACK, TOKEN, 2, session_bytes.ack_fields(2**40, 2**62)))
    assert len(ack.sealed) == PAD_BUCKETS[0] + TAG_SIZE
    assert bob.open(ack) == session_bytes.ack_fields(2**40, 2**62)
    unpadded, _ = pair(padded=False)
    assert len(envelope(unpadded.seal(ACK, TOKEN, 2, b"\x92\x00\x00")).sealed) == 3 + TAG_SIZE


def test_the_largest_plaintexts_fit_in_1200_bytes() -> None:
    for padded in (False, True):
        alice, _ = pair(padded, interval=2**64)
        biggest = alice.seal(DATA, TOKEN, wire.MAX_UINT - 1, bytes(alice.max_plaintext))
        assert len(biggest) <= wire.MAX_DATAGRAM_SIZE
    assert SESSION_ENVELOPE == 34


@pytest.mark.parametrize("n", [0, 1, 61, 62, 63, 254, 510, 1150])
def test_pad_and_unpad_round_trip(n: int) -> None:
    inner = random.Random(n).randbytes(n)
    padded = pad(inner)
    assert len(padded) == padded_size(n) and len(padded) in PAD_BUCKETS
    assert unpad(padded) == inner
    assert len(pad(inner, MESSAGE_BUCKET)) >= MESSAGE_BUCKET


@pytest.mark.parametrize(
    "plaintext, reason",
    [
        (bytes(63), "bucket"),
        (b"\x04\x00" + bytes(62), "runs past"),
        (b"\x00\x01x" + b"\x01" + bytes(60), "padding"),
    ],
)
def test_bad_framing_does_not_open(plaintext: bytes, reason: str) -> None:
    with pytest.raises(SealError, match=reason):
        unpad(plaintext)


def test_too_large_to_pad_is_a_local_error() -> None:
    with pytest.raises(ValueError, match="at most 1150"):
        pad(bytes(MAX_FIELDS + 1))


# --- key phases ---------------------------------------------------------------------------------


def test_key_phases_follow_noise_rekey() -> None:
    """protocol.md 8.1: the key of pn is REKEY applied pn // interval times."""
    alice, _ = pair(interval=8)
    e = envelope(alice.seal(ACK, TOKEN, 17, session_bytes.ack_fields(0, 0)))
    key = rekey(rekey(KEY))
    header = session_bytes.session_header(ACK, TOKEN, 17)
    assert ChaCha20Poly1305(key).decrypt(aead_nonce(17), e.sealed, header) == b"\x92\x00\x00"
    expected = ChaCha20Poly1305(KEY).encrypt(aead_nonce(2**64 - 1), bytes(32), b"")[:32]
    assert rekey(KEY) == expected


def test_reordered_datagrams_across_a_phase_boundary_open() -> None:
    alice, bob = pair(interval=8)
    sealed = [alice.seal(ACK, TOKEN, pn, session_bytes.ack_fields(pn, 0)) for pn in range(40)]
    order = list(range(40))
    random.Random(3).shuffle(order[:20])  # reordering within a few phases
    for pn in sorted(order[:20], key=lambda p: (p // 8, -p)) + order[20:]:
        assert bob.open(envelope(sealed[pn])) == session_bytes.ack_fields(pn, 0)


def test_a_forged_far_future_pn_costs_a_bounded_number_of_rekeys() -> None:
    keys = DirectionKeys(KEY, interval=8)
    assert keys.key(MAX_PHASES_AHEAD) is not None
    assert keys.key(MAX_PHASES_AHEAD + 1) is None  # however far the last forgery went
    assert keys.key(MAX_PHASES_AHEAD + 1) is None
    assert keys.key(2**61) is None
    assert len(keys._keys) == MAX_PHASES_AHEAD + 1


def test_old_phases_are_forgotten_once_newer_ones_authenticate() -> None:
    keys = DirectionKeys(KEY, interval=8)
    keys.key(10)
    keys.confirm(10)
    assert keys.key(7) is None and keys.key(8) is not None
    assert keys._base == 8 and len(keys._keys) == 3  # phases 8, 9 and 10


# --- the room key as a psk ----------------------------------------------------------------------

RELAY_KEY = bytes(range(32, 64))


def test_derive_room_psk_is_scrypt_salted_with_the_relay_key() -> None:
    psk = derive_room_psk("correct horse battery staple", RELAY_KEY)
    expected = Scrypt(salt=b"udpchat room key v3" + RELAY_KEY, length=32, n=2**14, r=8, p=1).derive(
        b"correct horse battery staple"
    )
    assert psk == expected
    assert derive_room_psk("correct horse battery staple", bytes(32)) != psk
    assert derive_room_psk("caf\u00e9", RELAY_KEY) == derive_room_psk("cafe\u0301", RELAY_KEY)


@pytest.mark.parametrize("passphrase", ["", "bad\ud800"])
def test_unusable_passphrases_are_refused_at_once(passphrase: str) -> None:
    with pytest.raises(ValueError, match="passphrase"):
        room_key(passphrase)


@pytest.mark.parametrize("relay_key", [b"", bytes(16), bytes(33)])
def test_a_relay_key_has_32_bytes(relay_key: bytes) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        derive_room_psk("open sesame", relay_key)


def test_sessions_keep_raw_keys_and_share_a_bounded_cache_of_cipher_contexts() -> None:
    """An AEAD context costs kilobytes of the crypto library's memory: a relay with many idle
    members must not hold two per member. Sessions keep 32-byte keys; contexts are cached for
    the keys in use, never more than CIPHER_CACHE, and a key whose context was dropped still
    seals and opens as before."""
    from udpchat import seal

    rng = random.Random(5)
    first = None
    for index in range(seal.CIPHER_CACHE + 50):
        send, receive = rng.randbytes(KEY_SIZE), rng.randbytes(KEY_SIZE)
        ends = (SessionCipher(send, receive, False), SessionCipher(receive, send, False))
        assert not any(
            isinstance(value, ChaCha20Poly1305)
            for end in ends
            for direction in (end.sending, end.receiving)
            for value in (direction.current, *(direction._keys or ()))
        )
        datagram = ends[0].seal(DATA, TOKEN, index, b"hello")
        assert ends[1].open(envelope(datagram)) == b"hello"
        if first is None:
            first = ends
        assert seal._cipher.cache_info().currsize <= seal.CIPHER_CACHE
    assert first is not None  # its contexts were evicted long ago; it still works
    assert first[1].open(envelope(first[0].seal(DATA, TOKEN, 10**6, b"again"))) == b"again"
