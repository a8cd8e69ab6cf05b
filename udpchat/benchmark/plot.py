"""The ``udpchat bench`` figure: latency and wire cost against loss, one line per system.

matplotlib is an optional dependency (the ``plot`` extra); without it `plot_results` raises
`PlotUnavailable` with a one-line explanation and everything else still works.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from udpchat.benchmark.sweep import SweepResults

COLOURS = {"udpchat": "tab:blue", "plain-udp": "tab:orange", "tcp-relay": "tab:green"}


class PlotUnavailable(RuntimeError):
    """matplotlib is missing (or cannot draw here)."""


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, never a window
        import matplotlib.pyplot as plt
    except ImportError:
        raise PlotUnavailable(
            "matplotlib is not installed (pip install 'udpchat[plot]'); JSON and tables are"
            " complete without it"
        ) from None
    return plt


def plot_results(results: SweepResults, path: Path) -> Path:
    """Draw latency p50/p99 and wire bytes per payload byte against loss; return ``path``."""
    plt = _pyplot()
    fig, (lat_ax, wire_ax) = plt.subplots(1, 2, figsize=(12, 4.8), constrained_layout=True)
    series: dict[tuple[str, int], list[tuple[float, float, float, float | None]]] = {}
    for p in results.reference:
        r = p.result
        if r is None or not r.ok or r.stats is None or r.stats.latency_ms is None:
            continue
        lat = r.stats.latency_ms
        series.setdefault((p.system, p.members), []).append(
            (p.loss_percent, lat.p50, lat.p99, p.wire_per_byte())
        )
    markers = "osD^v"
    sizes = sorted({members for _, members in series})
    for (system, members), rows in series.items():
        rows.sort()
        loss = [row[0] for row in rows]
        colour = COLOURS.get(system)
        marker = markers[sizes.index(members) % len(markers)]
        label = f"{system}, {members} members" if len(sizes) > 1 else system
        lat_ax.plot(
            loss, [row[2] for row in rows], marker=marker, color=colour, label=f"{label} p99"
        )
        lat_ax.plot(
            loss,
            [row[1] for row in rows],
            marker=marker,
            color=colour,
            linestyle="--",
            alpha=0.6,
            label=f"{label} p50",
        )
        wire = [(row[0], row[3]) for row in rows if row[3] is not None]
        wire_ax.plot(
            [w[0] for w in wire], [w[1] for w in wire], marker=marker, color=colour, label=label
        )
    lat_ax.set_yscale("log")
    lat_ax.set_xlabel("packet loss each way (%)")
    lat_ax.set_ylabel("one-way delivery latency (ms)")
    lat_ax.set_title("Latency p99 (solid) and p50 (dashed)")
    wire_ax.set_xlabel("packet loss each way (%)")
    wire_ax.set_ylabel("wire bytes per delivered payload byte")
    wire_ax.set_title("Wire cost")
    wire_ax.set_ylim(bottom=0)
    for ax in (lat_ax, wire_ax):
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines:
            ax.legend(fontsize="small")
    method = "kernel loss (netns + nftables)" if results.loss_method.kernel else "user-space loss"
    cfg = results.config
    fig.suptitle(
        f"udpchat bench: {cfg.messages} messages of {cfg.size} B at {cfg.rate:g}/s, {method}"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
