"""A real redis-server for the tests, started on a free loopback port and stopped at the end.

``redis_server`` (session-scoped) starts ``redis-server --port FREE --save '' --appendonly
no`` in a temporary directory, once for the whole run; tests that need it skip, saying why,
when the binary or the ``redis`` package is missing. Each test takes a room of its own
(``redis_room``), so tests never see each other's keys. ``stop``/``start`` on the server let
a test take Redis away and bring it back on the same port (empty: nothing is saved).
``relays`` makes ``Relay``s: views of one room as several relays have them (``RedisSharedLog``
with a short ttl and period), each closed at the end of the test.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from itertools import count
from pathlib import Path
from typing import Any

import pytest

__all__ = ["PERIOD", "TTL", "WAIT", "RedisServer", "Relay", "redis_room", "redis_server", "relays"]

STARTUP_TIMEOUT = 10.0
_rooms = count(1)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """One redis-server process of the tests."""

    def __init__(self, binary: str, directory: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it (again, on the same port) and wait until it answers PING."""
        self.process = subprocess.Popen(
            [
                self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)  # polling for the server to come up, bounded by the deadline
        self.stop()
        raise RuntimeError("redis-server did not answer within 10 s")

    def stop(self) -> None:
        """Kill it (as a crash would: nothing is saved)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def client(self) -> object:
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """The tests' redis-server; skips when there is none to be had."""
    binary = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None
    )
    if binary is None:
        pytest.skip("redis-server is not installed (Debian: apt-get install redis-server)")
    try:
        import redis  # noqa: F401
    except ImportError:
        pytest.skip("the redis package is not installed (pip install 'udpchat[redis]')")
    with tempfile.TemporaryDirectory(prefix="udpchat-redis-") as directory:
        server = RedisServer(binary, Path(directory))
        server.start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def redis_room(redis_server: RedisServer) -> str:
    """A room name no other test uses; the server is (re)started if a test stopped it."""
    if redis_server.process is None or redis_server.process.poll() is not None:
        redis_server.start()
    return f"test{os.getpid()}-{next(_rooms)}"


# A relay view's liveness ttl and housekeeping period in the tests (short, to see expiry), and
# how long a test waits for something that should happen.
TTL = 0.6
PERIOD = 0.1
WAIT = 5.0


class Relay:
    """One relay's view of the room, with its threads running and its wake-ups counted."""

    def __init__(self, url: str, room: str, history: int = 50, threads: bool = True) -> None:
        from udpchat.stores.redis import RedisSharedLog

        self.log = RedisSharedLog(
            url, room, history, secrets.token_bytes, ttl=TTL, period=PERIOD, timeout=0.3
        )
        self.woken = threading.Event()
        self.taken: list[Any] = []
        if threads:
            self.log.start(self.woken.set)

    def take(self) -> list[Any]:
        got: list[Any] = self.log.arrived()
        self.taken.extend(got)
        return got

    def wait_for(self, condition: Callable[[list[Any]], bool]) -> bool:
        from tests.e2e_support import wait_until

        return wait_until(lambda: bool(self.take() or True) and condition(self.taken), WAIT)


@pytest.fixture
def relays(redis_server: RedisServer, redis_room: str) -> Iterator[Callable[..., Relay]]:
    """Makes relay views of the test's room; closes them at the end."""
    made: list[Relay] = []

    def make(**kwargs: Any) -> Relay:
        relay = Relay(redis_server.url, redis_room, **kwargs)
        made.append(relay)
        return relay

    yield make
    for relay in made:
        relay.log.close()
