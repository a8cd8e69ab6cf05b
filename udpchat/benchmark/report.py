"""``udpchat bench`` output: rich tables of a sweep, its targets, and where the files went."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from udpchat.benchmark.sweep import (
    PLAIN_UDP,
    PLOT_FILE,
    TCP_RELAY,
    ReferencePoint,
    SweepConfig,
    SweepResults,
    evaluate_targets,
    group_reference,
    highest_unsaturated,
    ratio,
    run_sweep,
    write_json,
)

DASH = "-"
WIDE = 160


def _num(value: float | None, fmt: str) -> str:
    return DASH if value is None else format(value, fmt)


def _x(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}x"


def _p99(p: ReferencePoint | None) -> float | None:
    if p is None or p.result is None or p.result.stats is None:
        return None
    lat = p.result.stats.latency_ms
    return None if lat is None else lat.p99


def reference_table(results: SweepResults) -> Table:
    cfg = results.config
    kernel = results.loss_method.kernel
    table = Table(
        title=(
            f"Reference traffic: 1 sender, {cfg.messages} messages of {cfg.size} B at"
            f" {cfg.rate:g}/s to every other member"
        ),
        caption=(
            "Delivered: unique messages over expected. Latency: one-way, first deliveries only."
            " Wire/B: bytes on the wire (IP and UDP/TCP headers, every ACK, heartbeat and"
            " retransmission) per payload byte delivered"
            + (
                ", from the namespace's kernel counters."
                if kernel
                else "; TCP is a user-space estimate (a lower bound)."
            )
            + " Ratios against the baselines at the same point."
        ),
        caption_justify="left",
    )
    for name, justify in (
        ("system", "left"),
        ("members", "right"),
        ("loss", "right"),
        ("delivered", "right"),
        ("dup", "right"),
        ("ooo", "right"),
        ("p50 ms", "right"),
        ("p99 ms", "right"),
        ("wire/B", "right"),
        ("p99 vs tcp", "right"),
        ("wire vs udp", "right"),
        ("wire vs tcp", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    groups = group_reference(results.reference)
    keys = list(groups)
    for index, key in enumerate(keys):
        members, loss = key
        row = groups[key]
        udp = row.get(PLAIN_UDP)
        tcp = row.get(TCP_RELAY)
        for system, p in row.items():
            cells = [system, str(members), f"{loss:g}%"]
            r = p.result
            if r is None:
                table.add_row(*cells, p.skipped or "n/a", *[""] * 8, style="dim")
                continue
            if not r.ok or r.stats is None:
                table.add_row(*cells, "[red]failed[/]", *[""] * 8)
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
                _num(None if lat is None else lat.p50, ".2f"),
                _num(None if lat is None else lat.p99, ".2f"),
                _num(p.wire_per_byte(), ".2f"),
                _x(ratio(_p99(p), _p99(tcp))),
                _x(ratio(p.wire_per_byte(), None if udp is None else udp.wire_per_byte())),
                _x(ratio(p.wire_per_byte(), None if tcp is None else tcp.wire_per_byte())),
            ]
            table.add_row(*cells, end_section=index + 1 < len(keys) and system == list(row)[-1])
    return table


def fanout_table(results: SweepResults) -> Table:
    cfg = results.config
    table = Table(
        title=(
            f"Fan-out: {cfg.fanout_members} members, one sends {cfg.fanout_seconds:g} s of"
            f" {cfg.size} B messages, no loss"
        ),
        caption=(
            "Saturated: fewer than 95% of the offered deliveries per second achieved (from the"
            " first send to the last delivery). Relay CPU per delivery counts the relay process"
            " from ready to stop. Relay busy: its CPU time over the sending time (above ~100%"
            " the relay alone cannot keep up). Members: all members' CPU per delivery; relay and"
            f" members share this machine's {_cpus()} CPUs, so a saturated run with a relay far"
            " from busy was limited by the members."
        ),
        caption_justify="left",
    )
    for name in (
        "system",
        "offered msg/s",
        "offered deliv/s",
        "achieved deliv/s",
        "delivered",
        "saturated",
        "relay us/deliv",
        "vs udp",
        "relay busy",
        "members us/deliv",
    ):
        table.add_column(name, justify="left" if name == "system" else "right")
    rates = sorted({f.rate for f in results.fanout})
    for index, rate in enumerate(rates):
        runs = [f for f in results.fanout if f.rate == rate]
        base = next((f for f in runs if f.system == PLAIN_UDP), None)
        for f in runs:
            cells = [f.system, f"{rate:g}", f"{f.offered_deliveries_per_s:,.0f}"]
            if not f.ok or f.stats is None:
                table.add_row(*cells, "[red]failed[/]", *[""] * 6)
                continue
            busy = None if f.relay_cpu_s is None else f.relay_cpu_s / f.duration_s
            cells += [
                _num(f.achieved_deliveries_per_s, ",.0f"),
                f"{f.stats.delivery_ratio:.1%}",
                "[yellow]yes[/]" if f.saturated else "no",
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
            table.add_row(*cells, end_section=index + 1 < len(rates) and f is runs[-1])
    return table


def _cpus() -> str:
    return str(os.cpu_count() or "?")


def targets_table(results: SweepResults) -> Table:
    table = Table(
        title="udpchat against the team's targets (reported, not asserted)",
        caption_justify="left",
    )
    for name in ("target", "goal", "measured", "", "reproduce with"):
        table.add_column(name)
    for t in evaluate_targets(results):
        verdict = {True: "[green]met[/]", False: "[red]missed[/]", None: "[dim]n/a[/]"}[t.met]
        table.add_row(t.name, t.goal, t.measured, verdict, t.command)
    return table


def saturation_line(results: SweepResults, system: str) -> str | None:
    runs = [f for f in results.fanout if f.system == system]
    if not runs:
        return None
    best = highest_unsaturated(runs)
    return f"{system}: " + (
        "saturated at every rate tried" if best is None else f"no saturation up to {best:g} msg/s"
    )


def render(results: SweepResults, console: Console) -> None:
    console.print(f"[bold]Loss method:[/] {results.loss_method.description}.")
    if results.reference:
        console.print(reference_table(results))
    if results.fanout:
        console.print(fanout_table(results))
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
    # Piped output is not squeezed into 80 columns: the tables are meant to be read whole.
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
        from udpchat.benchmark.plot import PlotUnavailable, plot_results

        try:
            image = plot_results(results, out_dir / PLOT_FILE)
        except PlotUnavailable as exc:
            console.print(f"plot skipped: {exc}")
        else:
            console.print(f"plot: {image}")
    console.print(f"done in {results.elapsed_s:.0f} s")
    return 1 if results.failures else 0
