"""Turning a cProfile run into CPU per datagram, by kind of work.

The profiling scripts (``bench/scripts/relay_profile.py``, ``bench/scripts/member_profile.py``)
run one udpchat process part under ``cProfile`` with a thread-CPU clock and then divide by
the datagrams that part handled (received plus sent). Own time ("tottime") is exclusive, so
the categories below add up to the whole profile; cumulative time of the entry points shows
what each step costs with everything under it. The profiler's own overhead inflates every
figure (roughly 2x for this kind of code): compare figures from the same tool, not with the
unprofiled CPU the benchmark reports.
"""

from __future__ import annotations

import io
import pstats
from collections import Counter

__all__ = [
    "CATEGORIES", "breakdown", "category_of", "format_breakdown", "report", "top_table",
]

# (category, test on "file:function"), first match wins. The order matters: builtins are
# recognised by name before the modules that call them.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("socket calls", ("'sendto' of", "'send' of", "'recvfrom' of", "'recv' of", "select.epoll")),
    ("AEAD open/seal", ("ChaCha20Poly1305", "AESGCM", "udpchat/seal.py", "udpchat/noise.py")),
    ("msgpack", ("msgpack", "'packb'", "'unpackb'", "Packer", "Unpacker")),
    ("wire decode/encode", ("udpchat/wire.py", "udpchat/schema.py", "udpchat/wiretypes.py",
                            "udpchat/messages.py")),
    ("link (receive/ACK/send)", ("udpchat/link/", "udpchat/budget.py")),
    ("client session", ("udpchat/client/",)),
    ("relay core", ("udpchat/relay/", "udpchat/ratelimit.py", "udpchat/stores/")),
    ("driver wake/lock/queue", ("udpchat/driver.py", "threading.py", "queue.py", "'acquire'",
                                "'release'", "'notify", "_thread.lock", "udpchat/chat_client.py",
                                "udpchat/relay_server.py")),
    ("transport + selector", ("udpchat/transport.py", "selectors.py", "udpchat_bench/",
                              "relay_profile.py", "member_profile.py")),
    ("events/render", ("udpchat/events.py", "udpchat/render.py")),
)


def category_of(filename: str, function: str) -> str:
    """The category of one profile entry (``filename`` is "~" for builtins)."""
    key = f"{filename}:{function}"
    for name, needles in CATEGORIES:
        if any(needle in key for needle in needles):
            return name
    return "other"


def breakdown(stats: pstats.Stats) -> Counter[str]:
    """Own time in seconds by category."""
    totals: Counter[str] = Counter()
    for (filename, _line, function), entry in stats.stats.items():  # type: ignore[attr-defined]
        totals[category_of(filename, function)] += entry[2]
    return totals


def format_breakdown(stats: pstats.Stats, datagrams: int) -> str:
    """A markdown table: own µs per datagram by category, and its share."""
    totals = breakdown(stats)
    whole = sum(totals.values()) or 1.0
    per = max(1, datagrams)
    lines = [
        f"own CPU per datagram handled ({datagrams} datagrams, {whole:.3f} s profiled):",
        "",
        "| work | µs/datagram | share |",
        "|---|---:|---:|",
    ]
    for name, seconds in totals.most_common():
        lines.append(f"| {name} | {seconds / per * 1e6:.1f} | {seconds / whole:.0%} |")
    lines.append(f"| **total** | **{whole / per * 1e6:.1f}** | |")
    return "\n".join(lines)


def top_table(stats: pstats.Stats, datagrams: int, sort: str, top: int) -> str:
    """A markdown table of the ``top`` functions by ``sort`` ("tottime" or "cumulative"),
    in µs per datagram handled."""
    index = 2 if sort == "tottime" else 3
    rows = sorted(
        stats.stats.items(),  # type: ignore[attr-defined]
        key=lambda kv: -kv[1][index],
    )[:top]
    per = max(1, datagrams)
    title = "own" if sort == "tottime" else "cumulative"
    lines = [f"| function | calls/datagram | {title} µs/datagram |", "|---|---:|---:|"]
    for (filename, line, function), entry in rows:
        where = filename.split("site-packages/")[-1].split("/wt-perf/")[-1]
        name = function if filename == "~" else f"{where}:{line} {function}"
        lines.append(f"| `{name}` | {entry[1] / per:.2f} | {entry[index] / per * 1e6:.1f} |")
    return "\n".join(lines)


def report(stats: pstats.Stats, datagrams: int, top: int) -> str:
    """The breakdown and both top tables, as markdown."""
    out = io.StringIO()
    out.write(format_breakdown(stats, datagrams) + "\n\n")
    out.write(f"top {top} by own time:\n\n" + top_table(stats, datagrams, "tottime", top) + "\n\n")
    out.write(f"top {top} by cumulative time:\n\n")
    out.write(top_table(stats, datagrams, "cumulative", top) + "\n")
    return out.getvalue()
