"""Showing and measuring: ``demo``, ``bench`` and ``load``."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from udpchat.cli.common import FLAG, Command, _fail, _option, app
from udpchat.exitcodes import ExitCode
from udpchat.impair import parse_rate

__all__ = ["bench", "demo", "load", "parse_loss_percents"]


@app.command(cls=Command)
def demo(
    members: Annotated[
        int | None,
        typer.Option(
            help="Bot members in the room (2 to 32). Default: 4; 6 with --cluster.", metavar="N"
        ),
    ] = None,
    messages: Annotated[
        int | None,
        typer.Option(
            help="Messages each bot sends (1 to 10,000). Default: 50; 100 with --cluster.",
            metavar="N",
        ),
    ] = None,
    loss: Annotated[
        str,
        typer.Option(
            help="Datagrams lost on each bot's link, each way: 30% or 0.3 (below 100%).",
            metavar="RATE",
        ),
    ] = "25%",
    seed: Annotated[
        int, typer.Option(help="Random seed of the simulated network.", metavar="N")
    ] = 1,
    rate: Annotated[
        float, typer.Option(help="Messages per second per bot (up to 200).", metavar="PER_S")
    ] = 10.0,
    cluster: Annotated[
        bool,
        typer.Option(
            "--cluster",
            help="Three relays on one room in a Redis of the demo's own, one killed halfway: "
            "its bots move to the others (needs redis-server and the redis package).",
            metavar=FLAG,
        ),
    ] = False,
    json_output: Annotated[
        bool,
        typer.Option(
            "--json", help="No live display; print one JSON object at the end.", metavar=FLAG
        ),
    ] = False,
) -> None:
    """Bots chat through a relay on a lossy loopback network, then over plain UDP: compare.

    With --cluster, the bots chat through three relays sharing one room on Redis, and one
    relay is killed (SIGKILL) halfway through: its bots move to the other relays.

    Exits with status 1 if the reliable run lost, duplicated or reordered any message (with
    --cluster: also if a bot of the killed relay did not move or a member was seen leaving).

    Examples:

      udpchat demo
      udpchat demo --members 6 --loss 30% --messages 100 --seed 7
      udpchat demo --cluster
    """

    from rich.console import Console

    from udpchat.demo import DemoConfig, DemoError, run_demo
    from udpchat.demo.cluster import run_cluster_demo
    from udpchat.demo.processes import missing_requirement

    try:
        config = DemoConfig(
            members=members if members is not None else (6 if cluster else 4),
            messages=messages if messages is not None else (100 if cluster else 50),
            rate=rate,
            loss=_option("--loss", parse_rate, loss),
            seed=seed,
            compare_plain=not cluster,
        )
    except ValueError as error:
        message = str(error)
        _fail(message if message.startswith("--") else f"--{message}")
    if cluster and (missing := missing_requirement()) is not None:
        _fail(missing, ExitCode.FAILURE)
    console = None if json_output else Console()
    try:
        result = run_cluster_demo(config, console) if cluster else run_demo(config, console)
    except (DemoError, OSError) as error:
        _fail(f"demo: {error}", ExitCode.FAILURE)
    except KeyboardInterrupt:
        _fail("demo: interrupted", ExitCode.INTERRUPTED)
    if json_output:
        typer.echo(json.dumps(result.to_dict()))
    raise typer.Exit(ExitCode.OK if result.ok else ExitCode.FAILURE)


@app.command(cls=Command)
def bench(
    loss: Annotated[
        str | None,
        typer.Option(
            help="Loss rates to sweep, comma-separated, each 20% or 0.2 \\[default: "
            "0%,5%,10%,20%,30%; with --quick: 0%,20%].",
            metavar="RATES",
            show_default=False,
        ),
    ] = None,
    messages: Annotated[
        int | None,
        typer.Option(
            help="Messages the sender sends per run \\[default: 400; with --quick: 40].",
            metavar="N",
            show_default=False,
        ),
    ] = None,
    members: Annotated[
        str | None,
        typer.Option(
            help="Room sizes to sweep, sender included, comma-separated \\[default: 3,6; "
            "with --quick: 3].",
            metavar="LIST",
            show_default=False,
        ),
    ] = None,
    quick: Annotated[
        bool,
        typer.Option("--quick", help="A CI-sized run, well under a minute.", metavar=FLAG),
    ] = False,
    rounds: Annotated[
        int,
        typer.Option(
            help="Run the whole sweep this many times and report each point's medians (the"
            " worst round for delivery): figures that move less with the machine, in N times"
            " as long. An odd N reports medians that were measured.",
            metavar="N",
        ),
    ] = 1,
    out: Annotated[
        str, typer.Option(help="Directory for results.json and bench.png.", metavar="DIR")
    ] = "bench-results",
    no_kernel_loss: Annotated[
        bool,
        typer.Option(
            "--no-kernel-loss",
            help="Simulate loss in user space even where kernel loss (root, netns) works.",
            metavar=FLAG,
        ),
    ] = False,
) -> None:
    """Measure udpchat against a plain UDP forwarder and a TCP relay on the same traffic.

    Examples:

    A run of CI's size, well under a minute:
      udpchat bench --quick
    Three loss rates, with rooms of 3 and 10:
      udpchat bench --loss 0%,10%,20% --members 3,10
    The same, three times over, reporting medians:
      udpchat bench --loss 0%,10%,20% --members 3,10 --rounds 3
    """
    import sys
    from dataclasses import replace
    from pathlib import Path

    try:  # a distribution of its own (bench/), installed on request
        from udpchat_bench.report import run_bench
        from udpchat_bench.sweep import SweepConfig, parse_numbers
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] != "udpchat_bench":
            raise
        _fail(
            "udpchat bench needs the benchmark tools: "
            "pip install -e ./bench (from a udpchat checkout)",
            ExitCode.FAILURE,  # the command line was right; a part is missing
        )

    if rounds < 1:
        _fail(f"--rounds: expected at least 1, got {rounds}")
    try:
        config = SweepConfig.quick() if quick else SweepConfig()
        config = replace(
            config,
            losses=config.losses if loss is None else parse_loss_percents("--loss", loss),
            members=config.members if members is None else parse_numbers("--members", members, int),
            messages=config.messages if messages is None else messages,
            kernel_loss=False if no_kernel_loss else None,
            rounds=rounds,
        )
    except ValueError as error:
        _fail(str(error))
    command = "udpchat " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "udpchat bench"
    raise typer.Exit(run_bench(config, Path(out), command=command))


def parse_loss_percents(name: str, text: str) -> tuple[float, ...]:
    """``0%,5%,0.1`` -> ``(0.0, 5.0, 10.0)``: rates as everywhere else, in the percent the
    sweep is configured in."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise ValueError(f"{name}: expected at least one rate, e.g. 0%,10%,20%")
    return tuple(round(_option(name, parse_rate, part) * 100, 9) for part in parts)


@app.command(cls=Command)
def load(
    members: Annotated[
        str, typer.Option(help="Room sizes to measure, comma-separated.", metavar="LIST")
    ] = "100,500,1000",
    chat_rate: Annotated[
        float,
        typer.Option(help="Chat messages a second for the whole room.", metavar="PER_S"),
    ] = 2.0,
    duration: Annotated[
        float,
        typer.Option(
            help="Seconds measured per phase (idle, then chat, then a bare socket loop on as"
            " many heartbeats: the floor column).",
            metavar="SECONDS",
        ),
    ] = 10.0,
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON object per size.", metavar=FLAG)
    ] = False,
    storm: Annotated[
        bool,
        typer.Option(
            "--storm",
            help="Instead: real client sessions join at --join-rate, then the relay is "
            "restarted and the whole room rejoins at once (one size: the largest of "
            "--members); join times, rejoin time, lost lines, kernel drops.",
            metavar=FLAG,
        ),
    ] = False,
    join_rate: Annotated[
        float | None,
        typer.Option(
            help="Members starting to join a second (default: 50 at a time in flight; with "
            "--storm, 50 a second).",
            metavar="PER_S",
        ),
    ] = None,
    store: Annotated[
        str,
        typer.Option(
            help="Where the relay keeps its room: memory:, sqlite: (a fresh file per size) "
            "or redis://HOST:PORT/DB (a fresh room per size on that server).",
            metavar="URL",
        ),
    ] = "memory:",
) -> None:
    """Load a relay with many simulated members: CPU share, memory per member, join time,
    and datagrams the system dropped for full socket buffers.

    Examples:

    Rooms of 100 and 1,000 members, idle then chatting, 5 s a phase:
      udpchat load --members 100,1000 --duration 5
    1,000 real sessions join at 50 a second, then the relay restarts:
      udpchat load --storm --members 1000 --join-rate 50
    30 members chatting 500 lines a second, the room kept in SQLite:
      udpchat load --members 30 --chat-rate 500 --store sqlite:
    """
    try:  # a distribution of its own (bench/), installed on request
        from udpchat_bench.load import format_table, run_load, store_error
        from udpchat_bench.storm import format_result, run_storm
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] != "udpchat_bench":
            raise
        _fail(
            "udpchat load needs the benchmark tools: "
            "pip install -e ./bench (from a udpchat checkout)",
            ExitCode.FAILURE,  # the command line was right; a part is missing
        )

    try:
        sizes = [int(part) for part in members.split(",") if part.strip()]
        if not sizes or any(size < 1 for size in sizes):
            raise ValueError
    except ValueError:
        _fail(f"--members: expected positive numbers separated by commas, got {members!r}")
    if duration <= 0 or chat_rate < 0:
        _fail("--duration must be positive and --chat-rate not negative")
    join_rate_given = join_rate is not None
    if join_rate is None:
        join_rate = 50.0
    if not join_rate > 0:
        _fail(f"--join-rate: expected a number above 0, got {join_rate:g}")
    problem = store_error(store)
    if problem is not None:
        _fail(problem)
    if storm and store != "memory:":
        _fail("--store: the storm restarts a relay kept in memory; leave --store out")
    if storm:
        try:
            outcome = run_storm(
                max(sizes), join_rate, progress=lambda text: typer.echo(text, err=True)
            )
        except RuntimeError as error:
            _fail(f"load: {error}", ExitCode.FAILURE)
        typer.echo(json.dumps(outcome.to_dict()) if json_output else format_result(outcome))
        return
    try:
        results = run_load(
            sizes,
            chat_rate=chat_rate,
            duration=duration,
            progress=lambda text: typer.echo(text, err=True),
            join_rate=join_rate if join_rate_given else 0.0,
            store=store,
        )
    except RuntimeError as error:  # a stage that did not finish: the relay or a part failed
        _fail(f"load: {error}", ExitCode.FAILURE)
    if json_output:
        for result in results:
            typer.echo(json.dumps(result.to_dict()))
    else:
        typer.echo(format_table(results))
