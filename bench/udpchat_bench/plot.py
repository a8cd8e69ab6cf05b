"""The ``udpchat bench`` figure: delivery, latency and wire cost against loss, one line per
system.

matplotlib is an optional dependency (the ``plot`` extra); without it `plot_results` raises
`PlotUnavailable` with a one-line explanation and everything else still works.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from udpchat_bench.sweep import SweepResults

COLOURS = {
    "udpchat": "tab:blue",
    "plain-udp": "tab:orange",
    "tcp-relay": "tab:green",
    "enet": "tab:purple",
}


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
    """Draw delivery, latency p50/p99 and wire bytes per payload byte against loss; return
    ``path``.

    Delivery comes first because the other panels only make sense beside it: a system that
    loses messages is timed and costed on what it delivered, so plain UDP can look fastest
    and cheapest while it drops a third of the chat. The legend sits under the panels, where
    it hides no data point.
    """
    plt = _pyplot()
    fig, (got_ax, lat_ax, wire_ax) = plt.subplots(1, 3, figsize=(15, 5.2), constrained_layout=True)
    series: dict[tuple[str, int], list[tuple[float, float, float, float | None, float]]] = {}
    for p in results.reference:
        r = p.result
        if r is None or not r.ok or r.stats is None or r.stats.latency_ms is None:
            continue
        lat = r.stats.latency_ms
        series.setdefault((p.system, p.members), []).append(
            (p.loss_percent, lat.p50, lat.p99, p.wire_per_byte(), r.stats.delivery_ratio * 100)
        )
    markers = "osD^v"
    sizes = sorted({members for _, members in series})
    for (system, members), rows in series.items():
        rows.sort()
        loss = [row[0] for row in rows]
        colour = COLOURS.get(system)
        marker = markers[sizes.index(members) % len(markers)]
        label = f"{system}, {members} members" if len(sizes) > 1 else system
        got_ax.plot(loss, [row[4] for row in rows], marker=marker, color=colour, label=label)
        lat_ax.plot(loss, [row[2] for row in rows], marker=marker, color=colour)
        lat_ax.plot(
            loss, [row[1] for row in rows], marker=marker, color=colour, linestyle="--", alpha=0.6
        )
        wire = [(row[0], row[3]) for row in rows if row[3] is not None]
        wire_ax.plot([w[0] for w in wire], [w[1] for w in wire], marker=marker, color=colour)
    got_ax.set_ylabel("messages delivered (%)")
    got_ax.set_title("Delivered exactly once")
    got_ax.set_ylim(0, 105)
    lat_ax.set_yscale("log")
    lat_ax.set_ylabel("one-way delivery latency (ms)")
    lat_ax.set_title("Latency of what arrived: p99 (solid), p50 (dashed)")
    wire_ax.set_ylabel("wire bytes per delivered payload byte")
    wire_ax.set_title("Wire cost of what arrived")
    wire_ax.set_ylim(bottom=0)
    for ax in (got_ax, lat_ax, wire_ax):
        ax.set_xlabel("packet loss each way (%)")
        ax.grid(True, which="both", alpha=0.3)
    if got_ax.lines:
        fig.legend(loc="outside lower center", ncol=max(len(series), 1), fontsize="small")
    method = "kernel loss (netns + nftables)" if results.loss_method.kernel else "user-space loss"
    cfg = results.config
    rounds = f", medians of {cfg.rounds} rounds" if cfg.rounds > 1 else ""
    fig.suptitle(
        f"udpchat bench: {cfg.messages} messages of {cfg.size} B at {cfg.rate:g}/s, {method}"
        + rounds
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
