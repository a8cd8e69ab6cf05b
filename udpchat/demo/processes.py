"""The real processes of ``udpchat demo --cluster``: a ``redis-server`` of its own and the
``udpchat relay`` processes on it, all on 127.0.0.1, all in one temporary directory.

Invariants: every process is started in a session of its own, so that a Ctrl-C at the
terminal reaches the demo alone and the demo stops them in order (bots, relays, Redis);
``stop`` is safe to call twice and on a process that already died; nothing is written
outside the temporary directory (Redis runs with ``--save '' --appendonly no``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from udpchat.demo.config import LOOPBACK, POLL_S, DemoError
from udpchat.endpoint import Address

__all__ = ["RedisProcess", "RelayProcess", "missing_requirement", "stop_relays"]

START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
_LISTENING = re.compile(r"udpchat relay listening on 127\.0\.0\.1:(\d+)")


def missing_requirement() -> str | None:
    """What to install before the cluster demo can run, in one line; None if nothing."""
    if shutil.which("redis-server") is None:
        return (
            "demo --cluster needs redis-server on PATH: install Redis "
            "(Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)"
        )
    if importlib.util.find_spec("redis") is None:
        return "demo --cluster needs the redis package: pip install 'udpchat[redis]'"
    return None


def _free_tcp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


def _stop(process: subprocess.Popen[bytes] | None, kill: bool) -> None:
    if process is None or process.poll() is not None:
        return
    if kill:
        process.kill()
    else:
        process.terminate()
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(STOP_TIMEOUT_S)


class RedisProcess:
    """``redis-server`` on a free loopback port, nothing saved, its files in ``directory``."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise DemoError("redis-server is not on PATH")
        self.port = _free_tcp_port()
        self.process: subprocess.Popen[bytes] | None = subprocess.Popen(
            [
                binary, "--port", str(self.port), "--bind", LOOPBACK, "--save", "",
                "--appendonly", "no", "--dir", str(directory),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    @property
    def url(self) -> str:
        return f"redis://{LOOPBACK}:{self.port}/0"

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                raise DemoError(f"redis-server exited at start (port {self.port})")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((LOOPBACK, self.port), timeout=0.5) as sock,
            ):
                sock.sendall(b"PING\r\n")
                if sock.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(POLL_S / 2)  # bounded by the deadline
        raise DemoError(f"redis-server did not answer within {START_TIMEOUT_S:g} s")

    def stop(self) -> None:
        _stop(self.process, kill=True)  # nothing to save: it runs without persistence
        self.process = None


class RelayProcess:
    """``udpchat relay --port 0`` in a subprocess, its log in ``log_path``; ``address`` is read
    from the log's first line."""

    def __init__(self, name: str, args: Sequence[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.killed_at: float | None = None
        with log_path.open("wb") as log:
            self.process: subprocess.Popen[bytes] | None = subprocess.Popen(
                [sys.executable, "-m", "udpchat", "relay", "--host", LOOPBACK, "--port", "0",
                 *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.address: Address = (LOOPBACK, 0)

    def wait_listening(self, deadline: float) -> Address:
        """Wait for the relay's "listening on" line; ``DemoError`` with its last line if it
        exits or the deadline passes first."""
        while time.monotonic() < deadline:
            found = _LISTENING.search(self._log())
            if found is not None:
                self.address = (LOOPBACK, int(found.group(1)))
                return self.address
            if self.process is None or self.process.poll() is not None:
                raise DemoError(f"{self.name} did not start: {self.last_line()}")
            time.sleep(POLL_S / 2)  # bounded by the deadline
        raise DemoError(f"{self.name} did not start within {START_TIMEOUT_S:g} s")

    def _log(self) -> str:
        try:
            return self.log_path.read_text("utf-8", errors="replace")
        except OSError:
            return ""

    def last_line(self) -> str:
        lines = [line for line in self._log().splitlines() if line.strip()]
        return lines[-1] if lines else "no output"

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def crash(self) -> float:
        """``kill -9``: no goodbye, no cleanup, its key left in Redis to expire. Returns when
        the process is gone, with the time (``time.monotonic``) of the kill."""
        self.killed_at = time.monotonic()
        _stop(self.process, kill=True)
        return self.killed_at

    def stop(self) -> None:
        _stop(self.process, kill=True)
        self.process = None


def stop_relays(relays: Sequence[RelayProcess]) -> None:
    """SIGTERM to every relay at once (each leaves politely, in parallel), then wait for
    them, and SIGKILL whichever is still there after ``STOP_TIMEOUT_S``."""
    for relay in relays:
        if relay.process is not None and relay.process.poll() is None:
            relay.process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for relay in relays:
        if relay.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                relay.process.wait(max(0.0, deadline - time.monotonic()))
        relay.stop()  # SIGKILL if it is still there
