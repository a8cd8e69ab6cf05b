"""Suite-wide: an exception a serving loop survives in service fails the test that caused it.

The relay and client loops catch what a core call raises, so that one datagram cannot end a
room (udpchat.faults). Under test that would hide bugs, so strict mode is set for this
process and every subprocess it starts (they inherit the environment), and every test is
checked for faults recorded while it ran.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from udpchat import faults

os.environ[faults.STRICT_ENV] = "1"


@pytest.fixture(autouse=True)
def no_internal_errors() -> Iterator[None]:
    """Fail a test during which a serving loop caught an unexpected exception.

    A test that provokes one on purpose takes it with ``faults.take()`` before it ends."""
    yield
    caught = faults.take()
    if caught:
        pytest.fail(f"a serving loop caught unexpected exceptions: {caught}", pytrace=False)
