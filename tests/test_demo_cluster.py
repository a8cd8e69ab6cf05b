"""``udpchat demo --cluster`` for real: its own redis-server, three relay processes, one
killed with SIGKILL mid-chat; the killed relay's bots move, nothing is lost or doubled, and
nothing the demo started outlives it (also after a Ctrl-C)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

needs_redis = pytest.mark.skipif(
    shutil.which("redis-server") is None,
    reason="redis-server is not installed (Debian: apt-get install redis-server)",
)

# Short and gentle enough to be quick on a loaded machine: 3 bots, one per relay; 4 s of
# sending, relay 1 killed after 2 s; 10% loss each way.
SHORT = ["--members", "3", "--messages", "40", "--rate", "10", "--loss", "10%"]


def _demo(*args: str) -> list[str]:
    return [sys.executable, "-m", "udpchat", "demo", "--cluster", *args]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _processes_naming(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if text in cmdline and _running(int(entry.name)):
                found.append(int(entry.name))
    return found


@needs_redis
def test_the_killed_relays_bots_move_and_nothing_is_lost_or_doubled() -> None:
    pytest.importorskip("redis", reason="the redis package is not installed")
    done = subprocess.run(
        _demo(*SHORT, "--json"), capture_output=True, text=True, timeout=100, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads(done.stdout)
    assert data["ok"] is True
    run = data["run"]
    assert run["expected"] == 3 * 2 * 40
    assert run["delivered"] == run["expected"]
    assert run["duplicates"] == run["out_of_order"] == run["lost"] == 0
    assert len(data["relays"]) == 3 and data["killed"] == data["relays"][0]
    assert data["killed_after_s"] is not None
    # bot1 was on relay 1, the killed one; it resumed on one of the others.
    [move] = data["moves"]
    assert move["bot"] == "bot1" and move["home"] == data["killed"]
    assert move["to"] in data["relays"][1:]
    assert 0 < move["after_s"] < 10
    assert data["left_seen"] == []
    assert data["lost_without_failover"] > 0
    # Nothing the demo started is left: its redis-server and relays named the store's port.
    port = data["store"].rsplit(":", 1)[1].split("/")[0]
    assert _processes_naming(f"127.0.0.1:{port}") == []


@needs_redis
def test_ctrl_c_stops_redis_and_the_relays() -> None:
    pytest.importorskip("redis", reason="the redis package is not installed")
    demo = subprocess.Popen(
        _demo("--members", "3", "--messages", "300", "--rate", "10", "--loss", "10%"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # A Ctrl-C at a terminal: SIGINT as the default handler gets it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert demo.stdout is not None
        deadline = time.monotonic() + 60
        started: list[str] = []
        for line in demo.stdout:  # a line per phase: the output is not a terminal
            started.append(line)
            if "sending" in line or time.monotonic() > deadline:
                break
        assert any("sending" in line for line in started), "".join(started)
        children = _children(demo.pid)
        assert len(children) == 4  # redis-server and three relays
        demo.send_signal(signal.SIGINT)
        out, _ = demo.communicate(timeout=30)
        assert demo.returncode == 130, "".join(started) + out
        assert "interrupted" in out
        assert [pid for pid in children if _running(pid)] == []
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait(10)


def test_without_redis_server_one_line_says_what_to_install(tmp_path: Path) -> None:
    env = {**os.environ, "PATH": str(tmp_path)}  # no redis-server on this PATH
    done = subprocess.run(
        _demo(*SHORT), capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("udpchat: demo --cluster needs redis-server on PATH")
    assert "apt-get install redis-server" in lines[0]
