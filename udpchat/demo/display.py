"""What the demo shows: live progress while a run goes (or a line per phase when the output
is not a terminal), then the per-member verdict tables and the two runs side by side.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from udpchat.demo.bots import Bot
from udpchat.demo.config import DemoConfig, bot_name
from udpchat.demo.results import DemoResult, Recorder, RunResult, percent, summary_line

__all__ = [
    "VERDICT_LEGEND", "Display", "comparison_table", "or_dash", "print_result", "progress_view",
    "verdict_table",
]


class Display:
    """Live progress on a terminal; a line per phase otherwise; nothing without a console."""

    def __init__(self, console: Console | None, title: str) -> None:
        self.console = console
        self.title = title
        self.phase = "starting"
        self._live: Live | None = None
        self._render: Callable[[], RenderableType] | None = None

    def __enter__(self) -> Display:
        if self.console is not None and self.console.is_terminal:
            self._live = Live(
                console=self.console,
                get_renderable=self._renderable,
                refresh_per_second=8,
                transient=True,
            )
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def watch(self, render: Callable[[], RenderableType]) -> None:
        self._render = render

    def set_phase(self, phase: str) -> None:
        """A new phase: shown live, or printed as a line."""
        self.phase = phase
        if self._live is None and self.console is not None:
            self.console.print(f"{self.title}: {phase}", highlight=False, markup=False)

    def status(self, phase: str) -> None:
        """Progress within a phase: shown live only."""
        self.phase = phase
        self.refresh()

    def refresh(self) -> None:
        if self._live is not None:
            self._live.refresh()

    def _renderable(self) -> RenderableType:
        header = Text.assemble((self.title, "bold"), ": ", self.phase)
        if self._render is None:
            return header
        return Group(header, self._render())


def progress_view(
    recorder: Recorder, bots: Sequence[Bot], config: DemoConfig, started: float
) -> RenderableType:
    expected = config.expected_per_member
    table = Table(box=None, pad_edge=False)
    table.add_column("member")
    table.add_column("sent", justify="right")
    table.add_column("delivered", justify="right")
    table.add_column("", min_width=20)
    table.add_column("retx to relay", justify="right")
    table.add_column("srtt ms", justify="right")
    total = 0
    for i, bot in enumerate(bots):
        got = recorder.received(i)
        total += got
        numbers = bot.link_numbers()
        table.add_row(
            bot_name(i),
            f"{recorder.sent(i)}/{config.messages}",
            f"{got}/{expected}",
            ProgressBar(total=expected, completed=got, width=20),
            or_dash(numbers.retransmissions),
            or_dash(numbers.srtt_ms, "{:.1f}"),
        )
    overall = expected * len(bots)
    line = Text(
        f"{total}/{overall} delivered ({percent(total, overall)}), "
        f"{time.monotonic() - started:.1f} s"
    )
    return Group(table, line)


def or_dash(value: float | None, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


VERDICT_LEGEND = (
    "exp: messages it should get; got: received once; dup: extra copies; ooo: out of order; "
    "retx: resent by the bot / by the relay; srtt: smoothed round trip; p50, p99: latency "
    "of what arrived; times in ms"
)


def verdict_table(run: RunResult, title: str) -> Table:
    """Per member: what it should have got and what it got. Short headers and a legend, so
    that the table fits 80 columns without cutting a header."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("member", no_wrap=True)
    for name in ("exp", "got", "dup", "ooo", "retx", "srtt", "p50", "p99"):
        table.add_column(name, justify="right", no_wrap=True)
    rejoins = any(m.reconnects for m in run.members)
    if rejoins:
        table.add_column("rejoins", justify="right", no_wrap=True)
    for m in run.members:
        retx = (
            "-"
            if m.retransmissions is None
            else f"{m.retransmissions}/{or_dash(m.relay_retransmissions)}"
        )
        cells: list[str | Text] = [
            m.name,
            str(m.expected),
            _judged(m.delivered, m.delivered != m.expected),
            _judged(m.duplicates, m.duplicates > 0),
            _judged(m.out_of_order, m.out_of_order > 0),
            retx,
            _ms(m.srtt_ms),
            _ms(m.latency_p50_ms),
            _ms(m.latency_p99_ms),
        ]
        if rejoins:
            cells.append(str(m.reconnects))
        table.add_row(*cells)
    return table


def _span(run: RunResult) -> str:
    first, last = run.stats.first_send_ns, run.stats.last_recv_ns
    return "-" if first is None or last is None else f"{(last - first) / 1e9:.2f}"


def _latency(run: RunResult, quantile: str) -> str:
    summary = run.stats.latency_ms
    return "-" if summary is None else _ms(float(getattr(summary, quantile)))


def _judged(value: int, bad: bool) -> Text:
    return Text(str(value), "red" if bad else "green")


def comparison_table(result: DemoResult) -> Table:
    """The two runs side by side, totals over every member.

    Latency is measured on what arrived: plain UDP's figures leave out everything it lost,
    and the reliable run's include every message that had to be resent, so the caption says
    which share each figure covers rather than let the lower number look like the winner.
    """
    runs = [("reliable (udpchat)", result.reliable)]
    if result.plain is not None:
        runs.append(("plain UDP", result.plain))
    caption = None
    if result.plain is not None:
        plain = result.plain
        caption = (
            f"Latency covers what arrived: all of the reliable run's messages, resent ones "
            f"included, but only the {percent(plain.delivered, plain.expected)} that plain UDP "
            "delivered; what it lost would never arrive."
        )
    table = Table(
        title="Same traffic, same network",
        title_justify="left",
        caption=caption,
        caption_justify="left",
    )
    table.add_column("")
    for label, _ in runs:
        table.add_column(label, justify="right")

    def row(label: str, cell: Callable[[RunResult], str | Text]) -> None:
        table.add_row(label, *(cell(run) for _, run in runs))

    row(
        "delivered",
        lambda r: Text(
            f"{r.delivered}/{r.expected} ({percent(r.delivered, r.expected)})",
            "green" if r.delivered == r.expected else "red",
        ),
    )
    row("lost", lambda r: _judged(r.stats.lost, r.stats.lost > 0))
    row("duplicates", lambda r: _judged(r.duplicates, r.duplicates > 0))
    row("out of order", lambda r: _judged(r.out_of_order, r.out_of_order > 0))
    row("retransmissions", lambda r: or_dash(r.retransmissions))
    row(
        "reconnects",
        lambda r: "-" if r.mode != "reliable" else str(sum(m.reconnects for m in r.members)),
    )
    for q in ("p50", "p99", "max"):
        row(f"latency {q} ms, of what arrived", partial(_latency, quantile=q))
    row("all bots joined after s", lambda r: f"{r.join_s:.2f}" if r.mode == "reliable" else "-")
    row("first send to last delivery s", _span)
    return table


def print_result(result: DemoResult, console: Console) -> None:
    """The final tables and the one-line verdict."""
    console.print(verdict_table(result.reliable, "Reliable run (udpchat), per member"))
    if result.plain is not None:
        console.print(verdict_table(result.plain, "Plain UDP run (no reliability), per member"))
    console.print(Text(VERDICT_LEGEND, "dim"))
    console.print(comparison_table(result))
    for run in (result.reliable, result.plain):
        if run is not None:
            for error in run.send_errors:
                console.print(f"{run.mode}: not sent: {error}", highlight=False, markup=False)
    style = "bold green" if result.ok else "bold red"
    for label, run in (("reliable", result.reliable), ("plain UDP", result.plain)):
        if run is not None:  # one line per run: a line that wraps breaks mid-phrase
            console.print(Text(summary_line(label, run), style if run is result.reliable else ""))
    if not result.ok:
        console.print(Text("the reliable run lost, duplicated or reordered messages", "bold red"))

