"""How long a relay's Redis reader thread waits for the GIL, by ``sys.setswitchinterval``.

A relay on Redis has a reader thread blocked in XREAD; when another relay's event arrives,
the thread must take the GIL back before it can hand the event on, and if the serving thread
is running Python then, it gets it when that thread blocks in a system call or, at the
latest, after the switch interval (CPython's default: 5 ms). This measures that wait:

- a writer process XADDs an entry carrying its send time (``time.monotonic()``, one clock
  for the machine) every ``--gap`` seconds;
- this process's reader thread XREADs it (``redis_runtime.Line``, as the relay does) and
  notes how long after the send it was running Python again;
- meanwhile this process's main thread is idle, or busy with Python work (msgpack and
  dataclasses, in slices as long as a fan-out, ``--slice`` ms, with short sleeps between:
  about as busy as a loaded relay's serving thread).

For each switch interval: the wait's p50/p99 (ms) and the main thread's work done, per
second (what more frequent hand-overs cost it).

    python bench/scripts/reader_wakeup.py --events 300

A diagnostic: figures are printed, nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time

import msgpack
import redis

from udpchat import messages as m
from udpchat.stores.redis_runtime import Line
from udpchat_bench.redis_server import own_redis_server

WRITER = """
import sys, time, redis
port, gap, count = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
client = redis.Redis(port=port)
for _ in range(count):
    time.sleep(gap)
    client.xadd("s", {"t": repr(time.monotonic())})
client.xadd("s", {"t": "end"})
"""




def _work() -> None:
    """One unit of Python work, of the kind a fan-out does."""
    for seq in range(20):
        data = m.encode_message(m.ChatMessage(seq, 1_700_000_000, "ann", "hello " * 8))
        m.decode_message(data)
        msgpack.unpackb(msgpack.packb([seq, data, "x" * 30]))


def measure(port: int, interval: float, busy: bool, events: int, gap: float, slice_ms: float
            ) -> dict[str, float]:
    sys.setswitchinterval(interval)
    client = redis.Redis(port=port)
    client.delete("s")
    line = Line(client)
    waits: list[float] = []
    done = threading.Event()

    def reader() -> None:
        last = "0-0"
        while True:
            got = line.call("XREAD", "COUNT", 100, "BLOCK", 1000, "STREAMS", "s", last)
            now = time.monotonic()
            replies = list(got.items()) if isinstance(got, dict) else got or []
            for _name, entries in replies:
                for entry_id, fields in entries:
                    last = entry_id.decode()
                    value = dict(zip(fields[::2], fields[1::2], strict=True))[b"t"]
                    if value == b"end":
                        done.set()
                        return
                    waits.append(now - float(value))

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(port), str(gap), str(events)]
    )
    units = 0
    start = time.monotonic()
    while not done.is_set():
        if busy:
            end = time.monotonic() + slice_ms / 1000
            while time.monotonic() < end:
                _work()
                units += 1
            time.sleep(0.0002)  # a system call now and then, as a serving loop makes
        else:
            done.wait(0.05)
    elapsed = time.monotonic() - start
    writer.wait(10)
    thread.join(5)
    line.close()
    waits.sort()
    return {
        "switch_interval_ms": interval * 1000,
        "main_busy": busy,
        "n": len(waits),
        "wait_ms_p50": round(1000 * waits[len(waits) // 2], 3),
        "wait_ms_p99": round(1000 * waits[min(len(waits) - 1, int(0.99 * len(waits)))], 3),
        "main_work_per_s": round(units / elapsed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--gap", type=float, default=0.007)
    parser.add_argument("--slice", type=float, default=3.0, help="ms of Python per slice")
    parser.add_argument("--intervals", default="5,1,0.5,0.2", help="ms, comma-separated")
    args = parser.parse_args()
    with own_redis_server() as server:
        for busy in (False, True):
            for interval in (float(x) / 1000 for x in args.intervals.split(",")):
                print(json.dumps(measure(server.port, interval, busy, args.events, args.gap,
                                         args.slice)), flush=True)

if __name__ == "__main__":
    main()
