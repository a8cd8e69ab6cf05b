"""udpchat.noise against an independent implementation of the Noise Protocol Framework (the
``noiseprotocol`` package), on random keys, prologues, psks and payloads: same messages, same
split keys, same handshake hash, both ways round."""

from __future__ import annotations

import random
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from udpchat.noise import NK, NK_PSK0, Initiator, NoiseError, Responder, public_key

noise_connection = pytest.importorskip("noise.connection")
NoiseConnection = noise_connection.NoiseConnection
Keypair = noise_connection.Keypair

pytestmark = [pytest.mark.unit, pytest.mark.timeout(120)]


def reference(
    name: bytes, initiator: bool, prologue: bytes, psk: bytes | None, ephemeral: bytes
) -> object:
    """A ``noiseprotocol`` connection with its ephemeral key fixed (it warns about that)."""
    connection = NoiseConnection.from_name(name)
    if initiator:
        connection.set_as_initiator()
    else:
        connection.set_as_responder()
    connection.set_keypair_from_private_bytes(Keypair.EPHEMERAL, ephemeral)
    connection.set_prologue(prologue)
    if psk is not None:
        connection.set_psks(psk=psk)
    return connection


keys = st.binary(min_size=32, max_size=32)


@settings(max_examples=60, deadline=None)
@given(
    static=keys,
    ours=keys,
    theirs=keys,
    prologue=st.binary(max_size=80),
    psk=st.none() | keys,
    payload1=st.binary(max_size=300),
    payload2=st.binary(max_size=300),
)
def test_matches_noiseprotocol_both_ways(
    static: bytes,
    ours: bytes,
    theirs: bytes,
    prologue: bytes,
    psk: bytes | None,
    payload1: bytes,
    payload2: bytes,
) -> None:
    name = NK if psk is None else NK_PSK0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # our initiator, their responder
        responder = reference(name, False, prologue, psk, theirs)
        responder.set_keypair_from_private_bytes(Keypair.STATIC, static)
        responder.start_handshake()
        initiator = Initiator(public_key(static), prologue, psk, ours, payload1)
        assert bytes(responder.read_message(initiator.message)) == payload1
        message2 = bytes(responder.write_message(payload2))
        got, split = initiator.read_response(message2)
        assert got == payload2
        assert split.initiator == responder.noise_protocol.cipher_state_decrypt.k
        assert split.responder == responder.noise_protocol.cipher_state_encrypt.k
        assert split.handshake_hash == responder.get_handshake_hash()
        # their initiator, our responder
        other = reference(name, True, prologue, psk, ours)
        other.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, public_key(static))
        other.start_handshake()
        message1 = bytes(other.write_message(payload1))
        assert message1 == initiator.message  # same inputs, same bytes
        ours_responder = Responder(static, prologue, psk, message1)
        assert ours_responder.payload == payload1
        message2b, split_b = ours_responder.respond(theirs, payload2)
        assert message2b == message2
        assert bytes(other.read_message(message2b)) == payload2
        assert split_b == split


def _handshake(psk: bytes | None = None, prologue: bytes = b"p") -> tuple[Initiator, bytes]:
    rng = random.Random(1)
    static = rng.randbytes(32)
    return Initiator(public_key(static), prologue, psk, rng.randbytes(32), b"hello"), static


def test_a_wrong_psk_or_none_does_not_authenticate() -> None:
    initiator, static = _handshake(psk=b"k" * 32)
    for psk in (b"K" * 32, None):
        with pytest.raises(NoiseError):
            Responder(static, b"p", psk, initiator.message)
    assert Responder(static, b"p", b"k" * 32, initiator.message).payload == b"hello"


def test_another_prologue_or_static_key_does_not_authenticate() -> None:
    initiator, static = _handshake()
    with pytest.raises(NoiseError):
        Responder(static, b"q", None, initiator.message)
    with pytest.raises(NoiseError):
        Responder(bytes(32), b"p", None, initiator.message)


def test_a_message_2_from_someone_without_the_static_key_does_not_authenticate() -> None:
    """A man in the middle can answer message 1 with its own ephemeral key, but without the
    relay's static key it cannot have derived es, so its message 2 fails."""
    initiator, _static = _handshake()
    impostor_static = bytes(range(32))
    with pytest.raises(NoiseError):
        Responder(impostor_static, b"p", None, initiator.message)
    # Even replaying a genuine message 2 for another handshake fails.
    other, static = _handshake(prologue=b"other")
    genuine, _ = Responder(static, b"other", None, other.message).respond(bytes(32), b"x")
    with pytest.raises(NoiseError):
        initiator.read_response(genuine)


@pytest.mark.parametrize("size", [0, 31, 47])
def test_short_messages_are_noise_errors(size: int) -> None:
    initiator, static = _handshake()
    with pytest.raises(NoiseError):
        Responder(static, b"p", None, bytes(size))
    with pytest.raises(NoiseError):
        initiator.read_response(bytes(size))
