"""One room on 1 or N relays: fan-out latency, throughput and relay CPU, side by side.

    python bench/scripts/cluster_load.py --store memory: --relays 1
    python bench/scripts/cluster_load.py --store sqlite:/tmp/room.sqlite3 --relays 1
    python bench/scripts/cluster_load.py --store redis --relays 3   # its own redis-server

Starts the relays as ``udpchat relay`` processes on 127.0.0.1 (``--store redis`` starts a
``redis-server`` on a free loopback port, without persistence, and puts every relay on one
room of it), then ``--members`` bare members (udpchat_bench.load's generator, one process)
spread round robin over the relays. The members post ``--rate`` messages a second in all,
round robin, for ``--duration`` seconds; each message carries its send time, and the
deliveries to ``--sample`` members (spread over the relays) are timed: the fan-out latency
from the post leaving its member to the copy reaching another member, through the poster's
relay, Redis and the other relays. Reported: messages posted and refused, deliveries and
loss (every member but the poster should get each message), fan-out p50/p99, the relays' CPU
(all of them, % of one core, and per delivery) and Redis's. Figures depend on the machine;
nothing is asserted. Everything runs on loopback and stops by itself.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from udpchat import messages as m
from udpchat import wire
from udpchat.endpoint import Address
from udpchat_bench.load import LOCALHOST, LoadGenerator, proc_cpu_s
from udpchat_bench.redis_server import own_redis_server

LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")




class ClusterGenerator(LoadGenerator):
    """The load generator's members, spread over several relays, posting timed messages.

    A copy's latency ends when the kernel received it (SO_TIMESTAMPNS), not when this one
    Python thread, busy decrypting everybody's copies, got round to it."""

    def __init__(
        self, relays: list[Address], count: int, heartbeat: float, rate: float, sample: int
    ) -> None:
        super().__init__(relays[0], count, heartbeat, rate, stamps=True)
        self.clock_offset = time.time() - time.monotonic()  # kernel stamps are wall-clock
        self.relays = relays
        self.sampled = set(range(min(sample, count)))
        self.latencies: list[float] = []
        self.sent = 0
        self.datagrams = 0  # session datagrams the members received (bundling: < deliveries)

    def receive(self, datagram: wire.Datagram, now: float, arrived: float = math.nan) -> None:
        if isinstance(datagram, wire.Protected):
            self.datagrams += 1
        super().receive(datagram, now, arrived)

    def _send(self, member: object, data: bytes) -> None:
        index: int = member.index  # type: ignore[attr-defined]
        sock: int = member.sock  # type: ignore[attr-defined]
        with contextlib.suppress(OSError):
            self.socks[sock].sendto(data, self.relays[index % len(self.relays)])

    def on_message(self, member: Any, raw: bytes, now: float, arrived: float) -> None:
        super().on_message(member, raw, now, arrived)
        if member.index in self.sampled and len(raw) > 1 and raw[1] == m.MessageKind.MESSAGE:
            text = getattr(m.decode_message(raw), "text", "")
            if text.startswith("t"):
                end = now if math.isnan(arrived) else arrived - self.clock_offset
                self.latencies.append(end - float(text[1:]))

    def _chat(self, now: float) -> None:
        if not self.chatting:
            return
        count = len(self.members)
        while now >= self.next_chat:
            member = self.members[self.chat_cursor % count]
            self.chat_cursor += 1
            if member.welcomed and member.link is not None:
                with contextlib.suppress(Exception):
                    member.link.send(m.encode_message(m.Say(f"t{time.monotonic():.6f}")))
                    self.sent += 1
                    self.dirty.add(member.index)
            self.next_chat = max(self.next_chat + 1.0 / self.chat_rate, now - 1.0)


def _relay_log(proc: subprocess.Popen[str]) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        if "WARNING" in line or "ERROR" in line or "Traceback" in line:
            print(f"relay {proc.pid}: {line.rstrip()}", file=sys.stderr)


def _start_relay(
    store: str, room: str | None, key: Path, members: int, profile: Path | None,
    hops: Path | None = None,
) -> tuple[subprocess.Popen[str], Address]:
    limit = str(max(1024, members + 64))
    python = [sys.executable] + (["-m", "cProfile", "-o", str(profile)] if profile else [])
    # --hops: the relay runs through this script, which stamps each event's way first
    hops_script = str(Path(__file__).with_name("cluster_hops.py"))
    launcher = [hops_script, str(hops)] if hops is not None else ["-m", "udpchat"]
    args = [
        *python, *launcher, "relay", "--port", "0", "--store", store,
        "--identity", str(key), "--flood-burst", "100000", "--flood-rate", "100000",
        "--max-per-host", limit, "--max-per-network", limit, "--handshake-burst", limit,
        "--handshake-rate", "1000", "--admission-burst", limit, "--admission-rate", "1000",
    ]
    if room is not None:
        args += ["--room", room]
    proc = subprocess.Popen(
        args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        found = LISTENING.search(line)
        if found:
            # Keep reading its log so that the pipe never fills; warnings go to stderr.
            threading.Thread(target=_relay_log, args=(proc,), daemon=True).start()
            return proc, (LOCALHOST, int(found.group(1)))
    proc.kill()
    raise RuntimeError(f"the relay did not start: {' '.join(args)}")


def run(args: argparse.Namespace) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="udpchat-cluster-load-"))
    procs: list[subprocess.Popen[str]] = []
    redis_pid: int | None = None
    generator: ClusterGenerator | None = None
    own_redis = contextlib.ExitStack()
    try:
        store, room = args.store, None
        if store == "redis":
            server = own_redis.enter_context(own_redis_server())
            store, room, redis_pid = server.url, "bench", server.pid
        elif store.startswith("redis"):
            room = "bench"
        relays = []
        for index in range(args.relays):
            profile = Path(args.profile) / f"relay-{index}.prof" if args.profile else None
            hops = work / f"hops-{index}.json" if args.hops else None
            proc, address = _start_relay(
                store, room, work / "relay.key", args.members, profile, hops
            )
            procs.append(proc)
            relays.append(address)
        generator = ClusterGenerator(relays, args.members, 1.0, args.rate, args.sample)
        generator.join_all(time.monotonic() + 60)
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            generator.step(time.monotonic(), 0.05)
        pids = [proc.pid for proc in procs]
        cpu0 = sum(proc_cpu_s(pid) for pid in pids)
        redis0 = proc_cpu_s(redis_pid) if redis_pid is not None else 0.0
        delivered0, posted0, t0 = generator.deliveries, generator.posted, time.monotonic()
        datagrams0, own0 = generator.datagrams, time.process_time()
        generator.set_chat(True)
        end = t0 + args.duration
        while time.monotonic() < end:
            generator.step(time.monotonic(), 0.01)
        generator.set_chat(False)
        t1 = time.monotonic()
        own1 = time.process_time()
        cpu1 = sum(proc_cpu_s(pid) for pid in pids)
        redis1 = proc_cpu_s(redis_pid) if redis_pid is not None else 0.0
        end = time.monotonic() + 3.0  # what is still on its way
        while time.monotonic() < end:
            generator.step(time.monotonic(), 0.05)
        posted = generator.posted - posted0
        delivered = generator.deliveries - delivered0
        datagrams = generator.datagrams - datagrams0
        expected = posted * (args.members - 1)
        lat = sorted(generator.latencies)
        window = t1 - t0

        def pct(q: float) -> float:
            return round(1000 * lat[min(len(lat) - 1, int(q * len(lat)))], 2) if lat else math.nan

        result: dict[str, object] = {
            "store": args.store,
            "relays": args.relays,
            "members": args.members,
            "rate": args.rate,
            "sent": generator.sent,
            "posted": posted,
            "refused": generator.refused,
            "messages_per_s": round(posted / window, 1),
            "deliveries_per_s": round(delivered / window, 1),
            "member_datagrams_per_delivery": round(datagrams / max(delivered, 1), 3),
            "loss_pct": round(100 * (1 - delivered / expected), 3) if expected else math.nan,
            "fanout_ms_p50": round(1000 * statistics.median(lat), 2) if lat else math.nan,
            "fanout_ms_p99": pct(0.99),
            "relay_cpu_pct": round(100 * (cpu1 - cpu0) / window, 1),
            "relay_cpu_us_per_delivery": round(1e6 * (cpu1 - cpu0) / max(delivered, 1), 2),
            "redis_cpu_pct": round(100 * (redis1 - redis0) / window, 1),
            "generator_cpu_pct": round(100 * (own1 - own0) / window, 1),
        }
        return result
    finally:
        if generator is not None:
            generator.close()
        for proc in procs:
            proc.send_signal(signal.SIGINT)  # a relay's Ctrl-C: a profile is written
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        own_redis.close()
        if args.hops:
            from cluster_hops import summarize  # beside this script

            hop_files = [work / f"hops-{index}.json" for index in range(args.relays)]
            print(json.dumps({"hops_ms": summarize(hop_files)}))
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", default="memory:", help="memory:, sqlite:PATH, redis://... "
                        "or redis (a redis-server of its own)")
    parser.add_argument("--relays", type=int, default=1)
    parser.add_argument("--members", type=int, default=30)
    parser.add_argument("--rate", type=float, default=500.0, help="messages a second, in all")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--sample", type=int, default=6, help="members whose deliveries are timed")
    parser.add_argument("--profile", metavar="DIR", help="run the relays under cProfile")
    parser.add_argument("--hops", action="store_true", help="stamp each timed post's way "
                        "through the relays and Redis (cluster_hops.py) and print the hops")
    args = parser.parse_args()
    if args.relays < 1 or args.members < 2 or args.rate <= 0 or args.duration <= 0:
        parser.error("need --relays >= 1, --members >= 2, --rate > 0, --duration > 0")
    if args.relays > 1 and not args.store.startswith("redis"):
        parser.error("several relays share a room only on Redis (--store redis)")
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    print(json.dumps(run(args)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
