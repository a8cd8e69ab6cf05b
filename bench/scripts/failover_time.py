"""How long members of ``--server A,B`` take to resume on a warm standby after ``kill -9`` of A.

Real processes on loopback: relay A (``udpchat relay --store sqlite:F --identity K``) and
MEMBERS library clients joined with A and B as their relays; each member says a line
every 0.2 s. A is killed with SIGKILL and relay B is started at once on another port with
the same store and key. The figure is, per member, the time from the kill to its WELCOME
from B (the resume); the run also checks that every member saw every line once.

    python bench/scripts/failover_time.py --runs 10 --members 3
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.e2e_support import RelayProcess
from udpchat import events as ev
from udpchat.chat_client import ChatClient, ClientOptions
from udpchat.endpoint import Address

LIMITS = ("--flood-burst", "10000", "--flood-rate", "10000")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class Log:
    def __init__(self) -> None:
        self.events: list[tuple[float, ev.ClientEvent]] = []

    def __call__(self, event: ev.ClientEvent) -> None:
        self.events.append((time.monotonic(), event))

    def welcomes(self) -> list[float]:
        return [t for t, e in self.events if isinstance(e, ev.Welcomed)]

    def texts(self) -> list[str]:
        return [e.text for _, e in self.events if isinstance(e, ev.MessageReceived)]


def one_run(directory: Path, members: int) -> list[float]:
    store = directory / "room.sqlite3"
    args = ("--store", f"sqlite:{store}", "--identity", str(directory / "relay.key"), *LIMITS)
    first = RelayProcess(*args)
    standby: Address = ("127.0.0.1", free_port())
    second: RelayProcess | None = None
    clients: list[tuple[ChatClient, Log]] = []
    try:
        for i in range(members):
            log = Log()
            options = ClientOptions(f"m{i}", server=first.address, fallbacks=(standby,), pace=False)
            client = ChatClient(options, log).start()
            if not client.wait_joined(10):
                raise SystemExit(f"m{i} did not join")
            clients.append((client, log))
        sent = 0
        for tick in range(30):  # 6 s of chat; the kill after 2 s
            for client, _ in clients:
                client.say(f"{tick}")
                sent += 1
            time.sleep(0.2)
            if tick == 10:
                killed = time.monotonic()
                first.kill()
                second = RelayProcess(*args, port=standby[1])
        end = time.monotonic() + 20
        while time.monotonic() < end and not all(
            len(log.texts()) >= sent and len(log.welcomes()) >= 2 for _, log in clients
        ):
            time.sleep(0.05)
        times = []
        for client, log in clients:
            if sorted(log.texts()) != sorted(f"{tick}" for tick in range(30) for _ in clients):
                raise SystemExit(f"{client.nick}: not every line once")
            times.append(log.welcomes()[1] - killed)
        return times
    finally:
        for client, _ in clients:
            client.close()
        first.cleanup()
        if second is not None:
            second.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--members", type=int, default=3)
    options = parser.parse_args()
    times: list[float] = []
    for _ in range(options.runs):
        with tempfile.TemporaryDirectory() as directory:
            os.environ["XDG_STATE_HOME"] = directory  # a known_relays file of its own
            times.extend(one_run(Path(directory), options.members))
    print(
        f"{len(times)} members resumed on the standby: from kill -9 to WELCOME "
        f"median {statistics.median(times):.2f} s, max {max(times):.2f} s, "
        f"min {min(times):.2f} s"
    )


if __name__ == "__main__":
    main()
