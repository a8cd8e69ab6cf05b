"""Suite-wide: an exception a serving loop survives in service fails the test that caused it.

The relay and client loops catch what a core call raises, so that one datagram cannot end a
room (udpchat.faults). Under test that would hide bugs, so strict mode is set for this
process and every subprocess it starts (they inherit the environment), and every test is
checked for faults recorded while it ran.

Nothing the suite runs may touch the real state directory (a relay's key, the relays a user
has met): ``XDG_STATE_HOME`` points into a temporary directory for the whole session, which
subprocesses inherit, and into a fresh one for each test.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from udpchat import faults, state

os.environ[faults.STRICT_ENV] = "1"
_SESSION_STATE = tempfile.mkdtemp(prefix="udpchat-test-state-")
atexit.register(shutil.rmtree, _SESSION_STATE, True)
os.environ[state.STATE_ENV] = _SESSION_STATE


@pytest.fixture(autouse=True)
def private_state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test keeps relay keys and known relays of its own, in ``tmp_path / "state"``."""
    monkeypatch.setenv(state.STATE_ENV, str(tmp_path / "state"))


@pytest.fixture(autouse=True)
def no_internal_errors() -> Iterator[None]:
    """Fail a test during which a serving loop caught an unexpected exception.

    A test that provokes one on purpose takes it with ``faults.take()`` before it ends."""
    yield
    caught = faults.take()
    if caught:
        pytest.fail(f"a serving loop caught unexpected exceptions: {caught}", pytrace=False)
