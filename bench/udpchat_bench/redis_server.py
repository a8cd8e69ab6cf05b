"""A redis-server of a benchmark's own: on a free loopback port, without persistence, in a
temporary directory, answering before it is used, and gone afterwards.

The benchmarks that put relays on Redis (``bench/scripts/cluster_load.py`` and the scripts
that time one event's way through Redis) start one each; the tests have their own fixture
(``tests/redis_support.py``), which also stops and restarts it.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import NamedTuple

import redis

__all__ = ["RunningRedis", "own_redis_server"]

LOCALHOST = "127.0.0.1"
READY_WITHIN = 10.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        port: int = sock.getsockname()[1]
        return port


class RunningRedis(NamedTuple):
    url: str  # redis://127.0.0.1:PORT/0
    port: int
    pid: int  # for its CPU time


@contextlib.contextmanager
def own_redis_server() -> Iterator[RunningRedis]:
    """Start redis-server and yield where it is; SystemExit saying how to get it when it is
    not installed."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    work = tempfile.mkdtemp(prefix="udpchat-bench-redis-")
    port = _free_port()
    server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", LOCALHOST, "--save", "", "--appendonly",
         "no", "--dir", work],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://{LOCALHOST}:{port}/0"
    try:
        deadline = time.monotonic() + READY_WITHIN
        while True:
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"redis-server did not start on port {port}") from None
                time.sleep(0.05)
        yield RunningRedis(url, port, server.pid)
    finally:
        server.kill()
        server.wait(10)
        shutil.rmtree(work, ignore_errors=True)
