"""Parts of udpchat.noise made cheaper than the obvious code: the same answers."""

from __future__ import annotations

import pytest

from udpchat import noise

pytestmark = pytest.mark.unit


def test_a_key_is_judged_the_same_when_asked_again() -> None:
    low_order = bytes(32)  # the all-zero point: every DH with it is zero
    assert not noise.usable_public_key(low_order) and not noise.usable_public_key(low_order)
    good = noise.public_key(bytes(range(32)))
    assert noise.usable_public_key(good) and noise.usable_public_key(good)
    assert not noise.usable_public_key(good[:31])
