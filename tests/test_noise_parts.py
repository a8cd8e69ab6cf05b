"""Parts of udpchat.noise made cheaper than the obvious code: the same answers."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from udpchat import noise

pytestmark = pytest.mark.unit


@given(key=st.binary(max_size=64), data=st.binary(max_size=200))
def test_the_handshake_hmac_is_rfc_2104_hmac_blake2s(key: bytes, data: bytes) -> None:
    assert noise._hmac(key, data) == hmac.new(key, data, hashlib.blake2s).digest()


def test_a_key_is_judged_the_same_when_asked_again() -> None:
    low_order = bytes(32)  # the all-zero point: every DH with it is zero
    assert not noise.usable_public_key(low_order) and not noise.usable_public_key(low_order)
    good = noise.public_key(bytes(range(32)))
    assert noise.usable_public_key(good) and noise.usable_public_key(good)
    assert not noise.usable_public_key(good[:31])
