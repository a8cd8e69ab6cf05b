"""What ``udpchat demo --cluster`` shows and concludes: the live view (each bot, its relay,
its progress), the moves of the killed relay's bots, and the verdict.

The verdict is ``ClusterResult.ok``: the run is clean (every line once, in order, across the
kill), every bot of the killed relay moved to another relay, and no bot saw a member leave.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol

from rich import box
from rich.console import Console, Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from udpchat.demo.config import DemoConfig, bot_name
from udpchat.demo.display import VERDICT_LEGEND, verdict_table
from udpchat.demo.results import Recorder, RunResult, percent, summary_line

if TYPE_CHECKING:
    from udpchat.demo.processes import RelayProcess

__all__ = [
    "ClusterResult", "Move", "cluster_view", "moves_table", "outcome_table", "print_cluster_result",
]


class _Located(Protocol):
    def where(self) -> tuple[str, str | None, str | None]: ...


@dataclass(frozen=True)
class Move:
    """A bot of the killed relay (or any bot that moved): where it was, where it resumed
    (None: it never did), and how long after the kill its new relay welcomed it."""

    bot: str
    home: str
    to: str | None
    after_s: float | None
    attempts: int = 0  # relays tried before this one welcomed it


@dataclass(frozen=True)
class ClusterResult:
    config: DemoConfig
    run: RunResult
    store: str  # the Redis the relays shared (the demo's own, stopped by now)
    relays: tuple[str, ...]
    killed: str
    killed_after_s: float | None  # after the bots began sending; None: it was never killed
    moves: tuple[Move, ...]
    other_moves: tuple[Move, ...]  # bots whose relay went silent though it was not killed
    left_seen: tuple[str, ...]  # every member some bot saw leave during the run
    refusals: tuple[str, ...]  # "bot: reason" for every line a relay refused
    lost_without_failover: int  # deliveries the killed relay's bots would have missed
    join_s: float
    elapsed_s: float = 0.0

    def finished(self, elapsed_s: float) -> ClusterResult:
        return replace(self, elapsed_s=elapsed_s)

    @property
    def move_times(self) -> list[float]:
        return [m.after_s for m in self.moves if m.after_s is not None]

    @property
    def all_moved(self) -> bool:
        return self.killed_after_s is not None and all(m.to is not None for m in self.moves)

    @property
    def ok(self) -> bool:
        return self.run.clean and self.all_moved and not self.left_seen

    def summary(self) -> str:
        times = self.move_times
        moved = (
            f"{sum(m.to is not None for m in self.moves)}/{len(self.moves)} bots moved"
            + (f" in {max(times):.1f} s at most" if times else "")
        )
        return (
            f"{summary_line('3 relays, one killed', self.run)}; {moved}; "
            f"{len(self.left_seen)} seen leaving"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "summary": self.summary(),
            "config": self.config.to_dict(),
            "store": self.store,
            "relays": list(self.relays),
            "killed": self.killed,
            "killed_after_s": _rounded(self.killed_after_s),
            "moves": [asdict(m) for m in self.moves],
            "other_moves": [asdict(m) for m in self.other_moves],
            "left_seen": list(self.left_seen),
            "refusals": list(self.refusals),
            "lost_without_failover": self.lost_without_failover,
            "join_s": round(self.join_s, 3),
            "run": self.run.to_dict(),
            "elapsed_s": round(self.elapsed_s, 3),
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def cluster_view(
    recorder: Recorder,
    bots: Sequence[_Located],
    relays: Sequence[RelayProcess],
    config: DemoConfig,
    started: float,
) -> RenderableType:
    """Live: each relay (alive or killed), and each bot with its relay and progress."""
    names = {f"{r.address[0]}:{r.address[1]}": r.name for r in relays}
    states = Text(" ").join(
        Text(
            f"{r.name} {r.address[1]}: " + ("up" if r.alive else "KILLED"),
            "green" if r.alive else "bold red",
        )
        for r in relays
    )
    expected = config.expected_per_member
    table = Table(box=None, pad_edge=False)
    for name, justify in (("member", "left"), ("relay", "left"), ("sent", "right"),
                          ("delivered", "right")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    table.add_column("", min_width=20)
    total = 0
    for i, bot in enumerate(bots):
        got = recorder.received(i)
        total += got
        relay, trying, moved_from = bot.where()
        place = names.get(relay, relay)
        if trying is not None:
            shown = Text(f"{place} -> {names.get(trying, trying)}", "yellow")
        elif moved_from is not None:
            shown = Text(f"{place} (from {names.get(moved_from, moved_from)})", "cyan")
        else:
            shown = Text(place)
        table.add_row(
            bot_name(i),
            shown,
            f"{recorder.sent(i)}/{config.messages}",
            f"{got}/{expected}",
            ProgressBar(total=expected, completed=got, width=20),
        )
    overall = expected * len(bots)
    line = Text(
        f"{total}/{overall} delivered ({percent(total, overall)}), "
        f"{time.monotonic() - started:.1f} s"
    )
    return Group(states, table, line)


def moves_table(result: ClusterResult) -> Table:
    """The killed relay's bots: where each went and when its new relay welcomed it."""
    when = result.killed_after_s
    table = Table(
        title=f"Relay {result.killed} killed with SIGKILL"
        + ("" if when is None else f" {when:.1f} s into the chat"),
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("member")
    table.add_column("was on")
    table.add_column("moved to")
    table.add_column("welcomed after s", justify="right")
    table.add_column("relays tried", justify="right")
    for m in result.moves:
        table.add_row(
            m.bot,
            m.home,
            Text("never moved", "red") if m.to is None else Text(m.to),
            "-" if m.after_s is None else f"{m.after_s:.2f}",
            str(m.attempts),
        )
    return table


def outcome_table(result: ClusterResult) -> Table:
    run = result.run
    times = result.move_times
    table = Table(title="The room across the kill", title_justify="left")
    table.add_column("")
    table.add_column("3 relays on Redis, one killed", justify="right")

    def judged(text: str, good: bool) -> Text:
        return Text(text, "green" if good else "red")

    table.add_row(
        "delivered",
        judged(
            f"{run.delivered}/{run.expected} ({percent(run.delivered, run.expected)})",
            run.delivered == run.expected,
        ),
    )
    table.add_row("duplicates", judged(str(run.duplicates), run.duplicates == 0))
    table.add_row("out of order", judged(str(run.out_of_order), run.out_of_order == 0))
    table.add_row(
        "bots of the killed relay that moved",
        judged(
            f"{sum(m.to is not None for m in result.moves)}/{len(result.moves)}",
            result.all_moved,
        ),
    )
    table.add_row(
        "move time s (kill to welcome), median / max",
        "-" if not times else f"{statistics.median(times):.2f} / {max(times):.2f}",
    )
    table.add_row(
        "members seen leaving (expected 0)",
        judged(str(len(result.left_seen)), not result.left_seen),
    )
    table.add_row(
        "deliveries lost without fail-over",
        f"{result.lost_without_failover} of {run.expected}",
    )
    table.add_row("all bots joined after s", f"{result.join_s:.2f}")
    return table


def print_cluster_result(result: ClusterResult, console: Console) -> None:
    console.print(verdict_table(result.run, "Three relays, one room: per member"))
    console.print(Text(VERDICT_LEGEND, "dim"))
    console.print(moves_table(result))
    console.print(outcome_table(result))
    for error in result.run.send_errors:
        console.print(f"not sent: {error}", highlight=False, markup=False)
    for m in result.other_moves:
        when = "" if m.after_s is None else f" {m.after_s:.1f} s after the kill"
        console.print(
            f"also moved: {m.bot}, from {m.home} to {m.to}{when} (its relay went silent)",
            highlight=False,
            markup=False,
        )
    for refusal in sorted(set(result.refusals)):
        count = result.refusals.count(refusal)
        console.print(f"refused ({count}x): {refusal}", highlight=False, markup=False)
    if result.left_seen:
        console.print(
            f"seen leaving: {', '.join(sorted(set(result.left_seen)))}",
            highlight=False,
            markup=False,
        )
    console.print(Text(result.summary(), "bold green" if result.ok else "bold red"))
    if not result.ok:
        console.print(
            Text("the room lost, duplicated or reordered messages, or lost members", "bold red")
        )
