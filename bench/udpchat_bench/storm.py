"""Join-storm benchmark: a large room joining at a steady rate, then rejoining all at once.

Two processes on 127.0.0.1 besides this harness:

* the **relay** (``python -m udpchat_bench.storm relay``): a ``RelayServer`` with a fixed
  identity, its per-host limits raised (every member is on this machine, which the relay
  counts as one host) and its socket buffers as given;
* the **members** (``... storm members``): N real client sessions in one loop
  (``udpchat_bench.pool``), one socket each.

The run: members join at ``join_rate`` a second (each one's time from HELLO to WELCOME is
recorded, split where its CHALLENGE and ACCEPT were read, with the slowest joins' place in
the run); the room idles (the relay's CPU then is the idle baseline); the relay is killed
and, after ``down_s``, a new one starts on the same port with the same identity; meanwhile
``senders`` members each say a line (queued by their sessions). Everyone's heartbeat then
meets a RESET that proves the restart and the whole room rejoins at once. Measured: when the
last member is back (from the new relay's start); whether every line was posted once and
reached, exactly once, every member back in the room when it was posted (one back later gets
only the relay's join history: the restarted relay has no older room); whether every member
knows the room right (its size and no stranger: a paged room's names come on /who); who was
announced as timed out; how long until
the new relay's CPU is back within 5 points of the idle baseline, and the datagrams the
kernel dropped on the relay's socket and on the members' sockets in each phase.
Figures are reported, never asserted: they depend on the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import secrets
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

from udpchat.memory import settle_heap
from udpchat.relay.config import RelayConfig
from udpchat.relay_server import SOCKET_BUFFER, RelayOptions, RelayServer
from udpchat_bench.load import _Proc, _watch_stdin, proc_cpu_s
from udpchat_bench.pool import Member, MemberPool
from udpchat_bench.worker import emit

LOCALHOST = "127.0.0.1"
IDLE_WINDOW_S = 3.0
CPU_SAMPLE_S = 0.5
CPU_IDLE_MARGIN_PCT = 5.0  # "back to idle": within this many points of the idle baseline
STAGES = ("CHALLENGE", "ACCEPT", "WELCOME")  # a join's answers, each timed from the one before


@dataclass(frozen=True)
class StormResult:
    """One run's figures; times in milliseconds or seconds as named, CPU in % of one core."""

    members: int
    join_rate: float
    relay_buffers: str
    baseline: bool
    joined: int
    join_ms_p50: float
    join_ms_p99: float
    join_ms_max: float
    join_relay_drops: int
    join_member_drops: int
    # p50 / p99 of each stage, ms: HELLO to CHALLENGE, CHALLENGE to ACCEPT, ACCEPT to WELCOME
    join_stages_ms: tuple[tuple[float, float], ...]
    # the slowest joins: (ms into the join phase, room size then, total ms, the three stages)
    slowest_joins: tuple[tuple[float, ...], ...]
    relay_cpu_join_pct: float
    members_cpu_join_pct: float
    relay_cpu_idle_pct: float
    rejoined: int
    rejoin_all_s: float
    rejoin_p50_s: float
    lines_sent: int
    lines_posted: int
    lines_lost: int
    lines_duplicated: int
    lists_exact: int
    timed_out: int
    relay_cpu_idle_after_s: float
    rejoin_relay_drops: int
    rejoin_member_drops: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def storm_config(members: int, heartbeat: float) -> RelayConfig:
    """Limits that let one host (the loopback) bring in the whole room."""
    return RelayConfig(
        heartbeat=heartbeat,
        handshake_burst=members + 200,
        handshake_rate=max(1000.0, float(members)),
        reply_burst=members + 200,
        reply_rate=max(1000.0, float(members)),
        max_members=max(1024, members),
        max_members_per_host=members + 64,
        max_members_per_network=members + 64,
    )


# --- the relay worker -------------------------------------------------------------------------


def relay_main(params: Mapping[str, Any]) -> int:
    members = int(params["members"])
    baseline = bool(params.get("baseline", False))
    config = storm_config(members, float(params.get("heartbeat", 1.0)))
    if baseline:  # no admission pace to speak of
        config = replace(config, admission_burst=1_000_000, admission_rate=1e9)
    options = RelayOptions(
        host=LOCALHOST,
        port=int(params.get("port", 0)),
        config=config,
        static_key=bytes.fromhex(params["static_key"]),
        socket_buffer=0 if baseline else int(params.get("socket_buffer", SOCKET_BUFFER)),
    )
    server = RelayServer(options)
    if baseline:  # datagrams handled in order of arrival, handshakes or not
        server._driver._inbox.is_urgent = None
    stop = threading.Event()
    commands: queue.Queue[str] = queue.Queue()
    _watch_stdin(stop, float(params.get("max_lifetime_s", 600.0)), commands)

    def serve_commands() -> None:
        while not stop.is_set():
            try:
                command = commands.get(timeout=0.2)
            except queue.Empty:
                continue
            if command == "drops":
                emit("drops", drops=server.kernel_drops() or 0)
        server.stop(goodbye=False)

    threading.Thread(target=serve_commands, name="commands", daemon=True).start()
    settle_heap()  # as the udpchat relay command does once its relay has started
    buffers = server.socket_buffers
    emit(
        "ready",
        port=server.address[1],
        pid=os.getpid(),
        buffers=buffers.describe() if buffers is not None else "",
    )
    server.serve_forever()
    emit("result", drops=server.kernel_drops() or 0)
    return 0


# --- the members worker -----------------------------------------------------------------------


def members_main(params: Mapping[str, Any]) -> int:
    stop = threading.Event()
    commands: queue.Queue[str] = queue.Queue()
    _watch_stdin(stop, float(params.get("max_lifetime_s", 600.0)), commands)
    count = int(params["members"])
    rate = float(params["join_rate"])
    senders = int(params.get("senders", 0))
    start = time.monotonic()
    pool = MemberPool((LOCALHOST, int(params["port"])), [f"m{i}" for i in range(count)], start)
    everyone = sorted(m.session.nick for m in pool.members)
    try:
        for index in range(count):  # one every 1/rate seconds, on time however busy the loop
            pool.schedule_connect(index, start + index / rate)
        pool.run_until(lambda: pool.joined() == count, count / rate + 300.0)
        names = {m.session.nick for m in pool.members}
        pool.run_until(lambda: all(pool.knows_room(m, names) for m in pool.members), 120)
        join_ms = [
            1000 * (m.joined_at - m.started_at)
            for m in pool.members
            if m.joined_at is not None and m.started_at is not None
        ]
        emit(
            "joined",
            members=pool.joined(),
            join_ms=join_ms,
            stages=[_stages(m, start) for m in pool.members],
            drops=pool.kernel_drops(),
        )
        texts = [f"said while the relay was away, by m{i}" for i in range(senders)]
        gone, drops_before = time.monotonic(), 0
        while not stop.is_set():
            now = pool.step(time.monotonic(), 0.05)
            while not commands.empty():
                command = commands.get_nowait()
                if command == "say":
                    drops_before = pool.kernel_drops()
                    gone = now
                    for index, text in enumerate(texts):
                        pool.say(index, text, now)
                elif command.startswith("restarted "):
                    restarted = float(command.split()[1])
                    _watch_rejoin(pool, everyone, texts, gone, restarted, drops_before)
    finally:
        pool.close()
    return 0


def _stages(member: Member, start: float) -> list[float] | None:
    """A join's stages, in ms: when it started (from the run's start), then HELLO to
    CHALLENGE, CHALLENGE to ACCEPT and ACCEPT to WELCOME as the members' process read them;
    None for a join that was not seen whole."""
    times = (member.started_at, member.challenged_at, member.accepted_at, member.joined_at)
    if any(t is None for t in times):
        return None
    began, challenged, accepted, joined = (float(t or 0.0) for t in times)
    return [
        round(1000 * (began - start), 1),
        round(1000 * (challenged - began), 2),
        round(1000 * (accepted - challenged), 2),
        round(1000 * (joined - accepted), 2),
    ]


def _watch_rejoin(
    pool: MemberPool,
    everyone: list[str],
    texts: list[str],
    gone: float,
    restarted: float,
    drops_before: int,
) -> None:
    """Run until the room is whole again (or 60 s pass) and say how it went."""

    def back() -> bool:
        return all(m.joined_at is not None and m.joined_at > gone for m in pool.members)

    pool.run_until(back, 300.0)
    times = [m.joined_at - restarted for m in pool.members if m.joined_at and m.joined_at > gone]

    names = set(everyone)

    def whole() -> bool:
        lists = all(pool.knows_room(m, names) for m in pool.members)
        return lists and pool.missing(texts) == 0

    pool.run_until(whole, 120.0)
    pool.run_until(lambda: False, 1.0)  # duplicates, if any, would arrive now
    emit(
        "rejoined",
        members=len(times),
        all_s=max(times, default=float("nan")),
        p50_s=statistics.median(times) if times else float("nan"),
        lines=len(texts),
        lost=pool.missing(texts),
        duplicated=pool.duplicated(texts),
        posted=len(pool.posted_at),
        lists_exact=sum(pool.knows_room(m, names) for m in pool.members),
        timed_out=len(set(pool.timed_out)),
        drops=pool.kernel_drops() - drops_before,
    )


# --- the harness ------------------------------------------------------------------------------


def _percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_storm(
    members: int = 1000,
    join_rate: float = 50.0,
    senders: int = 20,
    down_s: float = 1.0,
    heartbeat: float = 1.0,
    socket_buffer: int = SOCKET_BUFFER,
    progress: Callable[[str], None] | None = None,
    baseline: bool = False,
) -> StormResult:
    """One run of the storm benchmark (see the module docstring). ``baseline``: the relay
    as it was before its join-storm defences (the system's default socket buffers, no
    handshake triage, no admission pace), for a before-and-after figure."""
    say = progress or (lambda _: None)
    key = secrets.token_bytes(32).hex()
    lifetime = 1500.0 + 2 * members / join_rate
    relay_params = {
        "members": members,
        "static_key": key,
        "heartbeat": heartbeat,
        "socket_buffer": socket_buffer,
        "max_lifetime_s": lifetime,
        "baseline": baseline,
    }
    relay = _Proc("relay", relay_params, module="udpchat_bench.storm")
    generator: _Proc | None = None
    second: _Proc | None = None
    try:
        ready = relay.wait("ready", 30)
        port = int(ready["port"])
        say(f"{members} members joining at {join_rate:g}/s ({ready['buffers']})")
        generator = _Proc(
            "members",
            {
                "members": members,
                "port": port,
                "join_rate": join_rate,
                "senders": senders,
                "max_lifetime_s": lifetime,
            },
            module="udpchat_bench.storm",
        )
        gen_pid, relay_pid = generator.proc.pid, int(ready["pid"])
        gen0, relay0, t_join = proc_cpu_s(gen_pid), proc_cpu_s(relay_pid), time.monotonic()
        joined = generator.wait("joined", 500.0 + 2 * members / join_rate)
        span = time.monotonic() - t_join
        gen_join_pct = 100 * (proc_cpu_s(gen_pid) - gen0) / span
        relay_join_pct = 100 * (proc_cpu_s(relay_pid) - relay0) / span
        relay.tell("drops")
        join_relay_drops = int(relay.wait("drops", 10)["drops"])
        say(f"idle window of {IDLE_WINDOW_S:g} s")
        pid = int(ready["pid"])
        cpu0, t0 = proc_cpu_s(pid), time.monotonic()
        time.sleep(IDLE_WINDOW_S)
        idle_pct = 100 * (proc_cpu_s(pid) - cpu0) / (time.monotonic() - t0)
        say("relay killed; restarting it")
        relay.proc.kill()
        relay.proc.wait(10)
        generator.tell("say")
        time.sleep(down_s)
        second = _Proc("relay", {**relay_params, "port": port}, module="udpchat_bench.storm")
        ready2 = second.wait("ready", 30)
        restarted = time.monotonic()
        generator.tell(f"restarted {restarted}")
        watch = _CpuWatch(int(ready2["pid"]), restarted)
        rejoined = generator.wait("rejoined", 500)
        time.sleep(2 * CPU_SAMPLE_S)  # a quiet window or two after the room is whole
        idle_after = watch.stop(idle_pct + CPU_IDLE_MARGIN_PCT)
        second.tell("drops")
        rejoin_relay_drops = int(second.wait("drops", 10)["drops"])
    finally:
        for proc in (generator, second, relay):
            if proc is not None:
                proc.reap()
    join_ms = [float(x) for x in joined["join_ms"]]
    stages = [s for s in joined.get("stages", []) if s is not None]
    by_stage = [[s[k] for s in stages] for k in (1, 2, 3)]
    # a member's place in the start order is the room's size as it began to join
    started = sorted(stages, key=lambda s: s[0])
    slowest = sorted(
        ((s[0], float(rank), round(sum(s[1:]), 2), *s[1:]) for rank, s in enumerate(started)),
        key=lambda row: -row[2],
    )[:5]
    return StormResult(
        members=members,
        join_rate=join_rate,
        relay_buffers=str(ready["buffers"]),
        baseline=baseline,
        joined=int(joined["members"]),
        join_ms_p50=round(statistics.median(join_ms), 2) if join_ms else float("nan"),
        join_ms_p99=round(_percentile(join_ms, 0.99), 2),
        join_ms_max=round(max(join_ms, default=float("nan")), 2),
        join_relay_drops=join_relay_drops,
        join_member_drops=int(joined["drops"]),
        join_stages_ms=tuple(
            (round(statistics.median(v), 2), round(_percentile(v, 0.99), 2)) if v else (0.0, 0.0)
            for v in by_stage
        ),
        slowest_joins=tuple(tuple(row) for row in slowest),
        relay_cpu_join_pct=round(relay_join_pct, 1),
        members_cpu_join_pct=round(gen_join_pct, 1),
        relay_cpu_idle_pct=round(idle_pct, 1),
        rejoined=int(rejoined["members"]),
        rejoin_all_s=round(float(rejoined["all_s"]), 3),
        rejoin_p50_s=round(float(rejoined["p50_s"]), 3),
        lines_sent=int(rejoined["lines"]),
        lines_posted=int(rejoined["posted"]),
        lines_lost=int(rejoined["lost"]),
        lines_duplicated=int(rejoined["duplicated"]),
        lists_exact=int(rejoined["lists_exact"]),
        timed_out=int(rejoined["timed_out"]),
        relay_cpu_idle_after_s=round(idle_after, 1),
        rejoin_relay_drops=rejoin_relay_drops,
        rejoin_member_drops=int(rejoined["drops"]),
    )


class _CpuWatch:
    """Samples a process's CPU in CPU_SAMPLE_S windows, in a thread, from ``since`` on."""

    def __init__(self, pid: int, since: float) -> None:
        self._pid = pid
        self._since = since
        self._samples: list[tuple[float, float]] = []  # (window end, CPU %)
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with contextlib.suppress(OSError):
            cpu0, t0 = proc_cpu_s(self._pid), time.monotonic()
            while not self._done.wait(CPU_SAMPLE_S):
                cpu1, t1 = proc_cpu_s(self._pid), time.monotonic()
                self._samples.append((t1, 100 * (cpu1 - cpu0) / (t1 - t0)))
                cpu0, t0 = cpu1, t1

    def stop(self, threshold: float) -> float:
        """Seconds from ``since`` to the end of the last window above ``threshold`` (CPU
        back to idle from then on); 0 if none was."""
        self._done.set()
        self._thread.join()
        busy = [end for end, pct in self._samples if pct > threshold]
        return max(busy, default=self._since) - self._since


def format_result(r: StormResult) -> str:
    return "\n".join(
        [
            f"relay{' (baseline)' if r.baseline else ''} socket: {r.relay_buffers}",
            f"join at {r.join_rate:g}/s: {r.joined} of {r.members} joined; join p50 "
            f"{r.join_ms_p50:.1f} ms, p99 {r.join_ms_p99:.1f} ms, max {r.join_ms_max:.1f} ms; "
            f"kernel drops: relay {r.join_relay_drops}, members {r.join_member_drops}; CPU "
            f"while joining: relay {r.relay_cpu_join_pct:.0f} %, members "
            f"{r.members_cpu_join_pct:.0f} %",
            "join stages p50/p99 (as the members read them): "
            + ", ".join(
                f"to {name} {p50:.1f}/{p99:.1f} ms"
                for name, (p50, p99) in zip(STAGES, r.join_stages_ms, strict=False)
            ),
            "slowest joins: "
            + "; ".join(
                f"{row[2]:.0f} ms at {row[0] / 1000:.1f} s ({row[1]:.0f} started before it: "
                f"{row[3]:.1f} + {row[4]:.1f} + {row[5]:.1f})"
                for row in r.slowest_joins
            ),
            f"idle relay CPU: {r.relay_cpu_idle_pct:.1f} %",
            f"rejoin after a restart: {r.rejoined} of {r.members} back, all within "
            f"{r.rejoin_all_s:.2f} s (p50 {r.rejoin_p50_s:.2f} s); lines said meanwhile: "
            f"{r.lines_sent}, posted {r.lines_posted}, lost {r.lines_lost}, duplicated "
            f"{r.lines_duplicated}; member "
            f"lists exact: {r.lists_exact}; timed out: {r.timed_out}; relay CPU back to idle "
            f"after {r.relay_cpu_idle_after_s:.1f} s; kernel drops: relay "
            f"{r.rejoin_relay_drops}, members {r.rejoin_member_drops}",
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m udpchat_bench.storm")
    sub = parser.add_subparsers(dest="role", required=True)
    for role in ("relay", "members"):
        sub.add_parser(role).add_argument("--json-args", required=True)
    run = sub.add_parser("run", help="run the benchmark and print its figures")
    run.add_argument("--members", type=int, default=1000)
    run.add_argument("--join-rate", type=float, default=50.0)
    run.add_argument("--socket-buffer", type=int, default=SOCKET_BUFFER)
    run.add_argument("--json", action="store_true")
    run.add_argument("--baseline", action="store_true", help="the relay without its defences")
    ns = parser.parse_args(argv)
    if ns.role == "relay":
        return relay_main(json.loads(ns.json_args))
    if ns.role == "members":
        return members_main(json.loads(ns.json_args))
    result = run_storm(
        ns.members,
        ns.join_rate,
        socket_buffer=ns.socket_buffer,
        baseline=ns.baseline,
        progress=lambda text: print(text, file=sys.stderr, flush=True),
    )
    print(json.dumps(result.to_dict()) if ns.json else format_result(result))
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    os._exit(code)  # stdin and timer threads must not keep a finished worker alive
