"""``udpchat bench`` output: rich tables of a sweep, its targets, and where the files went."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from udpchat_bench.sweep import (
    ENET,
    PLAIN_UDP,
    PLOT_FILE,
    TCP_RELAY,
    ReferencePoint,
    SweepConfig,
    SweepResults,
    group_reference,
    highest_unsaturated,
    ratio,
    run_sweep,
    write_json,
)
from udpchat_bench.targets import evaluate_targets

DASH = "-"
WIDE = 120


def _num(value: float | None, fmt: str) -> str:
    return DASH if value is None else format(value, fmt)


def _x(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}x"


def _x1(value: float | None) -> str:
    """A ratio in 4 columns: 2.8x, 0.0x, 17x."""
    if value is None:
        return DASH
    return f"{value:.1f}x" if value < 10 else f"{value:.0f}x"


def _p99(p: ReferencePoint | None) -> float | None:
    if p is None or p.result is None or p.result.stats is None:
        return None
    lat = p.result.stats.latency_ms
    return None if lat is None else lat.p99


def _ms(value: float | None) -> str:
    """Milliseconds in at most 6 columns for most values: 0.38, 33.4, 615, 30,945."""
    if value is None:
        return DASH
    if value < 10:
        return f"{value:.2f}"
    if value < 1000:
        return f"{value:.1f}"
    return f"{value:,.0f}"


SHORT_SYSTEM = {PLAIN_UDP: "udp", TCP_RELAY: "tcp", ENET: "enet"}
"""System names in the tables, narrow enough for 80 columns (the legend says which is which)."""


def _table(title: str) -> Table:
    """A borderless table that fits 80 columns: its legend is printed under it, full width."""
    return Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
    )


def reference_table(results: SweepResults) -> Table:
    cfg = results.config
    table = _table(
        f"Reference traffic: 1 sender, {cfg.messages} messages of {cfg.size} B at"
        f" {cfg.rate:g}/s to every other member"
    )
    for name, justify in (
        ("system", "left"),
        ("n", "right"),
        ("loss", "right"),
        ("got", "right"),
        ("dup", "right"),
        ("ooo", "right"),
        ("p50\nms", "right"),
        ("p99\nms", "right"),
        ("p99\n\u00f7tcp", "right"),
        ("wire\n/B", "right"),
        ("wire\n\u00f7udp", "right"),
        ("wire\n\u00f7tcp", "right"),
    ):
        table.add_column(name, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    groups = group_reference(results.reference)
    keys = list(groups)
    for index, key in enumerate(keys):
        members, loss = key
        row = groups[key]
        udp = row.get(PLAIN_UDP)
        tcp = row.get(TCP_RELAY)
        for system, p in row.items():
            cells = [SHORT_SYSTEM.get(system, system), str(members), f"{loss:g}%"]
            r = p.result
            last = index + 1 < len(keys) and system == list(row)[-1]
            if r is None:
                table.add_row(*cells, "n/a", *[""] * 8, style="dim", end_section=last)
                continue
            if not r.ok or r.stats is None:
                table.add_row(*cells, "[red]failed[/]", *[""] * 8, end_section=last)
                continue
            s = r.stats
            lat = s.latency_ms
            delivered = f"{s.delivery_ratio:.1%}"
            if s.delivered < s.expected:
                delivered = f"[yellow]{delivered}[/]"
            cells += [
                delivered,
                str(s.duplicates),
                str(s.out_of_order),
                _ms(None if lat is None else lat.p50),
                _ms(None if lat is None else lat.p99),
                _x1(ratio(_p99(p), _p99(tcp))),
                _num(p.wire_per_byte(), ".2f"),
                _x1(ratio(p.wire_per_byte(), None if udp is None else udp.wire_per_byte())),
                _x1(ratio(p.wire_per_byte(), None if tcp is None else tcp.wire_per_byte())),
            ]
            table.add_row(*cells, end_section=last)
    return table


def reference_legend(results: SweepResults) -> str:
    skipped = sorted({p.skipped for p in results.reference if p.result is None and p.skipped})
    return (
        "udp: the plain UDP forwarder, tcp: the TCP relay, enet: ENet (pyenet, reliable "
        "channel, optional); n: members in the room; loss: each "
        "way; got: unique messages delivered of those expected; dup: duplicates; ooo: out of "
        "order; p50, p99: one-way latency of first deliveries, so a system that loses "
        "messages is timed only on those it delivered; \u00f7tcp, \u00f7udp: ratio to that "
        "baseline at the same point; wire/B: bytes on the wire (IP and UDP/TCP headers, "
        "every ACK, heartbeat and retransmission) per payload byte delivered"
        + (
            ", from the namespace's kernel counters."
            if results.loss_method.kernel
            else "; TCP is a user-space estimate (a lower bound)."
        )
        + "".join(f" n/a: {reason}." for reason in skipped)
    )


def fanout_table(results: SweepResults) -> Table:
    cfg = results.config
    table = _table(
        f"Fan-out: {cfg.fanout_members} members, one sends {cfg.fanout_seconds:g} s of"
        f" {cfg.size} B messages, no loss"
    )
    for name in (
        "system",
        "msg/s",
        "deliv/s",
        "got",
        "sat.",
        "p99\nms",
        "relay\nus",
        "vs\nudp",
        "relay\nbusy",
        "members\nus",
    ):
        table.add_column(name, justify="left" if name == "system" else "right", no_wrap=True)
    rates = sorted({f.rate for f in results.fanout})
    for index, rate in enumerate(rates):
        runs = [f for f in results.fanout if f.rate == rate]
        base = next((f for f in runs if f.system == PLAIN_UDP), None)
        for f in runs:
            cells = [SHORT_SYSTEM.get(f.system, f.system), f"{rate:,.0f}"]
            last = index + 1 < len(rates) and f is runs[-1]
            if not f.ok or f.stats is None:
                table.add_row(*cells, "[red]failed[/]", *[""] * 7, end_section=last)
                continue
            busy = None if f.relay_cpu_s is None else f.relay_cpu_s / f.duration_s
            lat = f.stats.latency_ms
            cells += [
                _num(f.achieved_deliveries_per_s, ",.0f"),
                f"{f.stats.delivery_ratio:.1%}",
                "[yellow]yes[/]" if f.saturated else "no",
                _ms(None if lat is None else lat.p99),
                _num(f.relay_cpu_us_per_delivery, ".1f"),
                _x(
                    ratio(
                        f.relay_cpu_us_per_delivery,
                        None if base is None else base.relay_cpu_us_per_delivery,
                    )
                ),
                _num(None if busy is None else busy * 100, ".0f") + ("%" if busy else ""),
                _num(
                    f.members_cpu_s / f.stats.delivered * 1e6 if f.stats.delivered else None, ".1f"
                ),
            ]
            table.add_row(*cells, end_section=last)
    return table


def fanout_legend(results: SweepResults) -> str:
    receivers = results.config.fanout_members - 1
    return (
        f"msg/s: offered by the sender (each to {receivers} receivers); deliv/s: deliveries a "
        "second achieved, from the first send to the last delivery; got: share delivered; "
        "sat.: saturated, below 95% of the offered deliveries a second; p99: one-way latency "
        "of deliveries; relay us: relay CPU "
        "per delivery, from ready to stop; vs udp: ratio to the plain UDP forwarder; relay "
        "busy: relay CPU time over the sending time (above ~100% the relay alone cannot keep "
        "up); members us: all members' CPU per delivery. Relay and members share this "
        f"machine's {_cpus()} CPUs, so a saturated run with a relay far from busy was limited "
        "by the members."
    )


def _cpus() -> str:
    return str(os.cpu_count() or "?")


def targets_table(results: SweepResults) -> Table:
    """One target per row: the verdict, then what was measured against what goal and the
    command that measures it again, wrapped under each other rather than in narrow columns."""
    table = Table(
        title="udpchat against the team's targets (reported, not asserted)",
        title_justify="left",
        box=None,
        pad_edge=False,
        show_header=False,
    )
    table.add_column("verdict", no_wrap=True)
    table.add_column("target")
    for t in evaluate_targets(results):
        verdict = {True: "[green]met[/]", False: "[red]missed[/]", None: "[dim]n/a[/]"}[t.met]
        table.add_row(
            verdict, f"{t.name}: {t.measured} (goal {t.goal})\n[dim]reproduce: {t.command}[/]"
        )
    return table


def saturation_line(results: SweepResults, system: str) -> str | None:
    runs = [f for f in results.fanout if f.system == system]
    if not runs:
        return None
    best = highest_unsaturated(runs)
    return f"{system}: " + (
        "saturated at every rate tried" if best is None else f"no saturation up to {best:g} msg/s"
    )


def rounds_line(results: SweepResults) -> str | None:
    """How the points of several rounds were combined (None for a single round)."""
    n = results.config.rounds
    if n == 1:
        return None
    return (
        f"Every figure below is of {n} rounds of the whole sweep: latency, wire bytes, CPU and"
        " deliveries a second are medians over the rounds; got is the round that delivered"
        " least, dup and ooo the most of any round; a rate is saturated when its median"
        " deliveries a second are. results.json keeps each round."
    )


def render(results: SweepResults, console: Console) -> None:
    console.print(f"[bold]Loss method:[/] {results.loss_method.description}.")
    line = rounds_line(results)
    if line:
        console.print(line)
    if results.reference:
        console.print(reference_table(results))
        console.print(reference_legend(results), style="dim", highlight=False)
    if results.fanout:
        console.print(fanout_table(results))
        console.print(fanout_legend(results), style="dim", highlight=False)
        for system in dict.fromkeys(f.system for f in results.fanout):
            line = saturation_line(results, system)
            if line:
                console.print(line)
    console.print(targets_table(results))
    for failure in results.failures:
        console.print(f"[red]failed:[/] {failure}")


def run_bench(
    config: SweepConfig,
    out_dir: Path,
    *,
    console: Console | None = None,
    command: str = "udpchat bench",
    plot: bool = True,
) -> int:
    """Run the sweep, print tables, write JSON and (when matplotlib is there) the plot.

    Returns 0 when every run completed (whatever the numbers), 1 when some run failed.
    """
    # The tables fit 80 columns; piped output gets 120 so that legends wrap less.
    console = console or Console(width=None if sys.stdout.isatty() else WIDE)
    method_note = "kernel" if config.kernel_loss is not False else "user-space"
    console.print(
        f"udpchat bench: systems {', '.join(config.systems)}; loss"
        f" {', '.join(f'{x:g}%' for x in config.losses)}; rooms of"
        f" {', '.join(str(n) for n in config.members)}; fan-out at"
        f" {', '.join(f'{r:g}' for r in config.fanout_rates) or 'none'} msg/s"
        f" ({method_note} loss preferred)"
    )
    results = run_sweep(config, command=command, progress=lambda line: console.print(line))
    render(results, console)
    path = write_json(results, out_dir)
    console.print(f"results: {path}")
    if plot:
        from udpchat_bench.plot import PlotUnavailable, plot_results

        try:
            image = plot_results(results, out_dir / PLOT_FILE)
        except PlotUnavailable as exc:
            console.print(f"plot skipped: {exc}")
        else:
            console.print(f"plot: {image}")
    console.print(f"done in {results.elapsed_s:.0f} s")
    return 1 if results.failures else 0
