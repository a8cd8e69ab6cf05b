"""Suite-wide: an exception a serving loop survives in service fails the test that caused it.

The relay and client loops catch what a core call raises, so that one datagram cannot end a
room (udpchat.faults). Under test that would hide bugs, so strict mode is set for this
process and every subprocess it starts (they inherit the environment), and every test is
checked for faults recorded while it ran.

Nothing the suite runs may touch the real state directory (a relay's key, the relays a user
has met): ``XDG_STATE_HOME`` points into a temporary directory for the whole session, which
subprocesses inherit, and into a fresh one for each test.

Every test belongs to exactly one tier, declared with a marker (registered in
pyproject.toml): ``unit`` (sans-I/O on a virtual clock: no socket, thread, subprocess or
real sleep), ``e2e`` (real sockets on 127.0.0.1, threads, subprocesses) or ``bench`` (the
benchmark and load tools). Collection fails for a test with no tier or with two, and a
``unit`` test that opens a socket or starts a subprocess fails saying why.

The fast loop is ``UDPCHAT_TEST_PROFILE=fast python -m pytest -m unit``: the profile runs
every property test (hypothesis) with at most ``FAST_EXAMPLES`` examples, whatever its own
settings ask. Without it, as in the whole suite, every property test runs its full count.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, is_hypothesis_test, settings

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


TIERS = ("unit", "e2e", "bench")
UNIT_RULE = (
    "a unit test runs sans I/O on a virtual clock: no socket, thread, subprocess or real "
    "sleep. Give the test the e2e tier (pytest.mark.e2e) or drive the code through "
    "udpchat.sim instead"
)


PROFILE_ENV = "UDPCHAT_TEST_PROFILE"
FAST_EXAMPLES = 10
# The fast profile also skips the health check that times input generation, which a busy
# machine fails; the whole suite keeps it.
FAST_SUPPRESSED = [HealthCheck.too_slow]
settings.register_profile("fast", max_examples=FAST_EXAMPLES, suppress_health_check=FAST_SUPPRESSED)
FAST = os.environ.get(PROFILE_ENV) == "fast"
if FAST:
    settings.load_profile("fast")


def _cap_examples(item: pytest.Item) -> None:
    """Run a property test with at most FAST_EXAMPLES examples (the fast profile only).

    A test's own ``@settings(max_examples=...)`` outranks any profile, so the cap is put
    on the settings each test carries: a ``@given`` test's (hypothesis keeps them on the
    test function) or a state machine's ``TestCase.settings``."""
    test = getattr(item, "obj", None)
    machine = getattr(item, "cls", None)
    if isinstance(getattr(machine, "settings", None), settings):
        holder, attribute = machine, "settings"
    elif test is not None and is_hypothesis_test(test):
        holder, attribute = getattr(test, "__func__", test), "_hypothesis_internal_use_settings"
    else:
        return
    own = getattr(holder, attribute)
    fast = settings(
        own,
        max_examples=min(own.max_examples, FAST_EXAMPLES),
        suppress_health_check=[*own.suppress_health_check, *FAST_SUPPRESSED],
    )
    setattr(holder, attribute, fast)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test has exactly one tier: fail collection, naming the tests, otherwise."""
    wrong: list[str] = []
    for item in items:
        if FAST:
            _cap_examples(item)
        tiers = {mark.name for mark in item.iter_markers() if mark.name in TIERS}
        if len(tiers) != 1:
            found = ", ".join(sorted(tiers)) or "none"
            wrong.append(f"  {item.nodeid} (tiers: {found})")
    if wrong:
        raise pytest.UsageError(
            "every test needs exactly one tier marker out of "
            f"{', '.join(TIERS)} (e.g. pytestmark = pytest.mark.unit):\n" + "\n".join(wrong)
        )


class _NoSocket(socket.socket):
    def __new__(cls, *args: object, **kwargs: object) -> _NoSocket:
        raise RuntimeError(f"this unit test opened a socket; {UNIT_RULE}")


def _no_subprocess(*args: object, **kwargs: object) -> None:
    raise RuntimeError(f"this unit test started a subprocess; {UNIT_RULE}")


@pytest.fixture(autouse=True)
def unit_tier_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``unit`` test that opens a real socket or starts a subprocess fails."""
    if request.node.get_closest_marker("unit") is None:
        return
    monkeypatch.setattr(socket, "socket", _NoSocket)
    monkeypatch.setattr(subprocess, "Popen", _no_subprocess)


# The tests' own redis-server (session-scoped fixture ``redis_server``).
pytest_plugins = ["tests.redis_support"]
