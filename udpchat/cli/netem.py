"""``udpchat netem``: an impairing UDP proxy between clients and a relay."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated

import typer

from udpchat.cli.common import (
    BurstOption,
    Command,
    DelayOption,
    DupOption,
    JitterOption,
    LossOption,
    ReorderOption,
    SeedOption,
    _fail,
    _option,
    app,
    format_hostport,
    impairment_config,
    parse_hostport,
)
from udpchat.exitcodes import ExitCode
from udpchat.impair import parse_duration

__all__ = ["netem"]


@app.command(cls=Command)
def netem(
    listen: Annotated[
        str, typer.Option(help="Where clients send, HOST:PORT.", metavar="HOST:PORT")
    ],
    upstream: Annotated[
        str, typer.Option(help="The relay to forward to, HOST:PORT.", metavar="HOST:PORT")
    ],
    loss: LossOption = "0",
    burst: BurstOption = None,
    delay: DelayOption = "0",
    jitter: JitterOption = "0",
    dup: DupOption = "0",
    reorder: ReorderOption = "0",
    seed: SeedOption = 0,
    report: Annotated[
        str,
        typer.Option(
            help="Print the counters this often while running (0: only at the end).",
            metavar="DURATION",
        ),
    ] = "10s",
) -> None:
    """Run an impairing UDP proxy between clients and a relay until Ctrl-C.

    Examples:

    The relay on port 9000 behind 20% loss, reached through port 9100:
      udpchat netem --listen 127.0.0.1:9100 --upstream 127.0.0.1:9000 --loss 20%
    A member joins through the proxy:
      udpchat join carol --server 127.0.0.1:9100
    """
    from udpchat.netem import NetemProxy, describe, format_counters, format_progress

    try:
        listen_at = parse_hostport(listen, allow_port_zero=True)
        upstream_at = parse_hostport(upstream)
        config = impairment_config(
            loss=loss, burst=burst, delay=delay, jitter=jitter, dup=dup, reorder=reorder, seed=seed
        )
        every = _option("--report", parse_duration, report)
    except ValueError as error:
        _fail(str(error))
    proxy = NetemProxy(listen_at, upstream_at, config)
    try:
        proxy.start()
    except OSError as error:
        _fail(
            f"cannot start the proxy on {format_hostport(listen_at)}: {error.strerror or error}",
            ExitCode.FAILURE,
        )
    typer.echo(
        f"netem: {format_hostport(proxy.address)} -> {format_hostport(upstream_at)}, "
        f"{describe(config)}; Ctrl-C to stop"
    )
    try:
        _wait_for_interrupt(
            every, lambda: typer.echo(format_progress(proxy.counters, time.monotonic()))
        )
    finally:
        counters = proxy.counters
        proxy.stop()
        typer.echo(format_counters(counters))


def _wait_for_interrupt(every: float = 0.0, tick: Callable[[], None] | None = None) -> None:
    """Block until Ctrl-C, calling ``tick`` every ``every`` seconds (if both are given)."""
    try:
        while True:
            time.sleep(every if every > 0 and tick is not None else 3600)
            if every > 0 and tick is not None:
                tick()
    except KeyboardInterrupt:
        pass
