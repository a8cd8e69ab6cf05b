import random
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from hypothesis import given
from hypothesis import strategies as st

from udpchat import messages as m
from udpchat import wire
from udpchat.seal import (
    KEY_SIZE,
    MAX_INNER_SIZE,
    MESSAGE_BUCKET,
    NONCE_SIZE,
    PAD_BUCKETS,
    SEAL_OVERHEAD,
    TAG_SIZE,
    Sealer,
    SealError,
    derive_room_key,
    is_sealed,
    pad,
    padded_size,
    room_key,
    sealed_size,
    unpad,
)

pytestmark = pytest.mark.timeout(60)

KEY = bytes(range(KEY_SIZE))
OTHER_KEY = bytes(range(1, KEY_SIZE + 1))
PLAINTEXTS = st.binary(max_size=MAX_INNER_SIZE)


def seeded(seed: int = 7) -> Callable[[int], bytes]:
    return random.Random(seed).randbytes


def sealer(key: bytes = KEY, seed: int = 7) -> Sealer:
    return Sealer(key, seeded(seed))


@given(PLAINTEXTS)
def test_round_trip(plaintext: bytes) -> None:
    s = sealer()
    assert s.open(s.seal(plaintext)) == plaintext


def test_layout_matches_the_protocol() -> None:
    nonce = seeded()(NONCE_SIZE)
    datagram = sealer().seal(b"hello")
    version, kind, sent_nonce, ciphertext = msgpack.unpackb(datagram)
    assert (version, kind, sent_nonce) == (1, 15, nonce)
    assert len(ciphertext) == 64 + TAG_SIZE
    # The associated data is the two-byte (version, type) prefix; the plaintext is the
    # length-framed datagram padded with zeros to the 64-byte bucket.
    plaintext = ChaCha20Poly1305(KEY).decrypt(nonce, ciphertext, b"\x01\x0f")
    assert plaintext == b"\x00\x05hello" + bytes(64 - 7)


def test_seeded_nonce_source_makes_sealing_deterministic() -> None:
    assert sealer(seed=3).seal(b"x") == sealer(seed=3).seal(b"x")
    assert sealer(seed=3).seal(b"x") != sealer(seed=4).seal(b"x")


def test_each_seal_draws_a_fresh_nonce() -> None:
    s = sealer()
    assert s.seal(b"same") != s.seal(b"same")


@pytest.mark.parametrize("n", [0, 1, 239, 240, 241, 1000, 1164, 1200, 65471, 65519, 65520, 65535])
def test_sealed_size_is_exact(n: int) -> None:
    nonce = seeded()(NONCE_SIZE)
    ciphertext = ChaCha20Poly1305(KEY).encrypt(nonce, bytes(n), b"\x01\x0f")
    envelope = msgpack.packb([1, 15, nonce, ciphertext], use_bin_type=True)
    assert len(envelope) == sealed_size(n)


def test_buckets_and_their_sealed_sizes() -> None:
    assert PAD_BUCKETS == (64, 256, 512, 1164)
    assert [sealed_size(b) for b in PAD_BUCKETS] == [99, 292, 548, 1200]
    assert MAX_INNER_SIZE == 1162 and SEAL_OVERHEAD == 38


@given(st.integers(min_value=0, max_value=MAX_INNER_SIZE))
def test_every_sealable_datagram_seals_to_a_bucket_size(n: int) -> None:
    inner = bytes(n)
    size = padded_size(inner)
    assert size in PAD_BUCKETS and size >= n + 2
    assert all(b < n + 2 for b in PAD_BUCKETS if b < size)  # the smallest that holds it
    datagram = sealer().seal(inner)
    assert len(datagram) == Sealer.sealed_length(inner) == sealed_size(size)
    assert len(datagram) in (99, 292, 548, 1200)


def test_seal_overhead_keeps_a_1200_byte_budget() -> None:
    budget = 1200
    assert len(sealer().seal(bytes(budget - SEAL_OVERHEAD))) == budget
    with pytest.raises(ValueError, match="at most 1162"):
        sealer().seal(bytes(budget - SEAL_OVERHEAD + 1))


def _data(text: str, pn: int = 3) -> bytes:
    say = m.encode_message(m.Say(text))
    return wire.encode_data(bytes(8), pn, 2, 0, pn, False, [say])


def test_data_is_padded_to_the_message_bucket() -> None:
    """A short and an ordinary chat line, a bundle: all DATA starts at 256 bytes; control
    datagrams stay in the smallest bucket."""
    ack = wire.encode_ack(bytes(8), 2**40, 2**40, 2**62)
    assert padded_size(ack) == 64
    assert padded_size(wire.encode_ping(bytes(8), 0, 0, 0)) == 64
    assert padded_size(_data("hi")) == MESSAGE_BUCKET
    assert padded_size(_data("x" * 100, pn=2**40)) == MESSAGE_BUCKET
    assert padded_size(_data("x" * 300)) == 512
    many = [m.encode_message(m.Say("x")) for _ in range(20)]  # 26 fields: a 3-byte array header
    bundle = wire.encode_data(bytes(8), 1, 0, 0, 1, False, many)
    assert bundle[0] == 0xDC and padded_size(bundle) == MESSAGE_BUCKET
    s = sealer()
    assert len(s.seal(_data("hi"))) == len(s.seal(_data("x" * 100))) == 292
    assert len(s.seal(ack)) == 99


@given(st.binary(max_size=MAX_INNER_SIZE))
def test_pad_and_unpad_round_trip(inner: bytes) -> None:
    padded = pad(inner)
    assert len(padded) == padded_size(inner)
    assert padded[:2] == len(inner).to_bytes(2, "big")
    assert unpad(padded) == inner


@pytest.mark.parametrize(
    ("plaintext", "reason"),
    [
        (b"\x00\x01x" + bytes(62), "not a bucket size"),  # 65 bytes
        (b"\x00\x03hi", "not a bucket size"),  # unpadded
        (b"\x00\x3fhi" + bytes(60), "runs past"),
        (b"\xff\xffhi" + bytes(60), "runs past"),
        (b"\x00\x02hi" + bytes(59) + b"\x01", "padding is not zero"),
        (b"\x00\x00" + b"\x80" + bytes(61), "padding is not zero"),
    ],
)
def test_bad_framing_does_not_open(plaintext: bytes, reason: str) -> None:
    """Authentic, but framed wrong: a receiver drops it (protocol.md 8)."""
    nonce = bytes(NONCE_SIZE)
    ciphertext = ChaCha20Poly1305(KEY).encrypt(nonce, plaintext, b"\x01\x0f")
    datagram = msgpack.packb([1, 15, nonce, ciphertext], use_bin_type=True)
    with pytest.raises(SealError, match=reason):
        sealer().open(datagram)


@given(PLAINTEXTS, st.data())
def test_tampering_with_any_byte_is_detected(plaintext: bytes, data: st.DataObject) -> None:
    s = sealer()
    datagram = bytearray(s.seal(plaintext))
    index = data.draw(st.integers(min_value=0, max_value=len(datagram) - 1), label="index")
    datagram[index] ^= data.draw(st.integers(min_value=1, max_value=255), label="xor")
    with pytest.raises(SealError):
        s.open(bytes(datagram))


def test_every_single_bit_flip_is_detected() -> None:
    s = sealer()
    datagram = s.seal(b"a short chat line")
    for index in range(len(datagram)):
        for bit in range(8):
            altered = bytearray(datagram)
            altered[index] ^= 1 << bit
            with pytest.raises(SealError):
                s.open(bytes(altered))


@given(PLAINTEXTS, st.data())
def test_truncation_and_extension_are_detected(plaintext: bytes, data: st.DataObject) -> None:
    s = sealer()
    datagram = s.seal(plaintext)
    cut = data.draw(st.integers(min_value=0, max_value=len(datagram) - 1), label="cut")
    with pytest.raises(SealError):
        s.open(datagram[:cut])
    with pytest.raises(SealError):
        s.open(datagram + data.draw(st.binary(min_size=1, max_size=8), label="extra"))


@given(PLAINTEXTS)
def test_wrong_key_is_rejected(plaintext: bytes) -> None:
    with pytest.raises(SealError, match="authentication"):
        sealer(OTHER_KEY).open(sealer(KEY).seal(plaintext))


@pytest.mark.parametrize(
    ("envelope", "reason"),
    [
        ([2, 15, bytes(12), bytes(16)], "not a sealed datagram"),
        ([1, 14, bytes(12), bytes(16)], "not a sealed datagram"),
        ([1, 15, bytes(11), bytes(16)], "not a sealed datagram"),
        ([1, 15, bytes(12)], "not a sealed datagram"),
        ([1, 15, bytes(12), bytes(16), 0], "not a sealed datagram"),
        ([1, 15, bytes(12), "text not bin"], "binary"),
        ([1, 15, bytes(12), bytes(15)], "at least 16"),
        ([1, 15, bytes(12), bytes(16)], "authentication"),
        ({"version": 1}, "not a sealed datagram"),
    ],
)
def test_malformed_envelopes(envelope: Any, reason: str) -> None:
    with pytest.raises(SealError, match=reason):
        sealer().open(msgpack.packb(envelope))


NONCE = bytes(NONCE_SIZE)


@pytest.mark.parametrize(
    ("datagram", "error"),
    [
        (b"\x94\x01\x0f\xc4\x0c" + NONCE, "ValueError"),
        (b"\x94\x01\x0f\xc4\x0c" + NONCE + b"\xc1", "FormatError"),
        (b"\x94\x01\x0f\xc4\x0c" + NONCE + b"\x91" * 5000, "StackError"),
        (b"\x94\x01\x0f\xc4\x0c" + NONCE + b"\xa2\xff\xfe", "UnicodeDecodeError"),
        (b"\x94\x01\x0f\xc4\x0c" + NONCE + b"\xc4\x10" + bytes(16) + b"\x00", "ExtraData"),
    ],
)
def test_msgpack_errors_become_seal_errors(datagram: bytes, error: str) -> None:
    with pytest.raises(SealError, match=error):
        sealer().open(datagram)


def test_non_canonical_header_is_not_sealed() -> None:
    # The same values with the version as a uint8: legal msgpack, but never what seal writes.
    datagram = sealer().seal(b"x")
    padded = b"\x94\xcc\x01" + datagram[2:]
    assert msgpack.unpackb(padded)[0] == 1
    assert not is_sealed(padded)
    with pytest.raises(SealError):
        sealer().open(padded)


def test_not_bytes_is_a_seal_error() -> None:
    with pytest.raises(SealError):
        sealer().open(None)  # type: ignore[arg-type]
    assert not is_sealed("\x94\x01\x0f")  # type: ignore[arg-type]


def test_is_sealed() -> None:
    assert is_sealed(sealer().seal(b""))
    assert not is_sealed(b"")
    assert not is_sealed(msgpack.packb([1, 1, 0, "hello"]))


MSGPACK_INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)
MSGPACK_VALUES = st.recursive(
    st.none() | st.booleans() | MSGPACK_INTS | st.floats() | st.text() | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=6)
        | st.dictionaries(st.text(max_size=4) | MSGPACK_INTS, inner, max_size=4)
    ),
    max_leaves=20,
)
ENVELOPE_LIKE = st.tuples(
    st.sampled_from([1, 15, 0, True, 1.0]) | MSGPACK_VALUES,
    st.sampled_from([15, 1, 16, 15.0]) | MSGPACK_VALUES,
    st.binary(min_size=11, max_size=13) | MSGPACK_VALUES,
    st.binary(max_size=64) | MSGPACK_VALUES,
).map(list)


def assert_only_seal_error(datagram: bytes) -> None:
    try:
        sealer().open(datagram)
    except SealError:
        return
    pytest.fail("a forged datagram opened")


@given(st.binary(max_size=1300))
def test_arbitrary_bytes_raise_only_seal_error(datagram: bytes) -> None:
    assert_only_seal_error(datagram)


@given(st.binary(max_size=1300))
def test_arbitrary_bytes_after_the_sealed_prefix_raise_only_seal_error(tail: bytes) -> None:
    assert_only_seal_error(b"\x94\x01\x0f\xc4\x0c" + tail)


@given(MSGPACK_VALUES | ENVELOPE_LIKE)
def test_arbitrary_msgpack_values_raise_only_seal_error(value: Any) -> None:
    assert_only_seal_error(msgpack.packb(value, use_bin_type=True))


def test_bad_key_and_bad_nonce_source_are_local_errors() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Sealer(bytes(16), seeded())
    with pytest.raises(ValueError, match="nonce source"):
        Sealer(KEY, lambda n: bytes(n - 1)).seal(b"x")


SALT = bytes(range(16))


def test_derive_room_key_is_deterministic_and_documented() -> None:
    key = derive_room_key("correct horse battery staple", SALT)
    assert len(key) == KEY_SIZE
    assert derive_room_key("correct horse battery staple", SALT) == key
    expected = Scrypt(salt=b"udpchat room key v2" + SALT, length=32, n=2**14, r=8, p=1).derive(
        b"correct horse battery staple"
    )
    assert key == expected
    assert derive_room_key("correct horse battery stable", SALT) != key


def test_another_salt_gives_another_key() -> None:
    """Two relays with the same passphrase have different keys: a dictionary computed for
    one room's salt is no use against another's."""
    key = derive_room_key("correct horse battery staple", SALT)
    assert derive_room_key("correct horse battery staple", bytes(16)) != key
    assert derive_room_key("correct horse battery staple", SALT[::-1]) != key


def test_derive_room_key_normalises_the_passphrase() -> None:
    assert derive_room_key("caf\u00e9", SALT) == derive_room_key("cafe\u0301", SALT)


def test_members_with_the_same_passphrase_understand_each_other() -> None:
    alice = room_key("open sesame", seeded(1))(SALT)
    bob = room_key("open sesame", seeded(2))(SALT)
    eve = room_key("open says me", seeded(3))(SALT)
    other_room = room_key("open sesame", seeded(4))(bytes(16))
    datagram = alice.seal(b"hi bob")
    assert bob.open(datagram) == b"hi bob"
    for outsider in (eve, other_room):
        with pytest.raises(SealError):
            outsider.open(datagram)


@pytest.mark.parametrize("passphrase", ["", "bad\ud800"])
def test_unusable_passphrases_are_refused_at_once(passphrase: str) -> None:
    with pytest.raises(ValueError, match="passphrase"):
        room_key(passphrase, seeded())
    with pytest.raises(ValueError, match="passphrase"):
        derive_room_key(passphrase, SALT)


@pytest.mark.parametrize("salt", [b"", bytes(15), bytes(17)])
def test_a_salt_has_16_bytes(salt: bytes) -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        derive_room_key("open sesame", salt)
