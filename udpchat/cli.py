"""Command-line entry point: parse options, build a config, call the library.

Every command stays thin: it turns option strings into values, and any mistake becomes one
line on stderr and exit status 1, never a traceback. The impairment options are shared by
``netem``, ``relay`` and ``join``, so a lossy network is spelled the same way everywhere.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable
from typing import Annotated, NoReturn

import typer

from udpchat import __version__
from udpchat.impair import ImpairmentConfig, parse_duration, parse_rate
from udpchat.messages import MAX_MEMBERS_LISTED
from udpchat.names import nick_error
from udpchat.transport import Address

app = typer.Typer(
    help="A multi-user terminal chat over UDP with its own reliability layer.",
    no_args_is_help=True,
    add_completion=False,
)

DEFAULT_PORT = 9000
IMPAIRMENT_PANEL = "Network impairment (simulated, seeded)"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"udpchat {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """udpchat: chat over UDP that survives a lossy network."""


def main() -> None:
    app()


# --- shared parsing ---------------------------------------------------------------------------


def parse_hostport(text: str, *, allow_port_zero: bool = False) -> Address:
    """Parse ``HOST:PORT`` (an IPv6 address in brackets: ``[::1]:9000``) into ``(host, port)``.

    Nothing is resolved here; a name that does not resolve fails when the socket is opened.
    Port 0 (any free port) makes sense only for an address we listen on.
    """
    example = "e.g. 127.0.0.1:9000 or [::1]:9000"
    value = text.strip()
    if value.startswith("["):
        host, bracket, port_text = value[1:].partition("]")
        if not bracket or not port_text.startswith(":"):
            raise ValueError(f"invalid address {text!r}: expected [IPv6]:PORT, {example}")
        port_text = port_text[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid address {text!r}: {host!r} is not an IPv6 address") from None
    else:
        host, colon, port_text = value.rpartition(":")
        if not colon:
            raise ValueError(f"invalid address {text!r}: missing ':PORT', {example}")
        if ":" in host:
            raise ValueError(
                f"invalid address {text!r}: put an IPv6 address in brackets, {example}"
            )
    if not host or any(ch.isspace() for ch in host):
        raise ValueError(f"invalid address {text!r}: missing or malformed host, {example}")
    low = 0 if allow_port_zero else 1
    if not (port_text.isascii() and port_text.isdigit()) or not low <= int(port_text) <= 65535:
        raise ValueError(
            f"invalid port {port_text!r} in {text!r}: expected a number from {low} to 65535"
        )
    return host, int(port_text)


def format_hostport(address: Address) -> str:
    """The inverse of :func:`parse_hostport`, for messages."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def impairment_config(
    *,
    loss: str = "0",
    burst: float | None = None,
    delay: str = "0",
    jitter: str = "0",
    dup: str = "0",
    reorder: str = "0",
    seed: int = 0,
) -> ImpairmentConfig:
    """Build the simulated network from the option strings; ``ValueError`` names the option.

    ``--loss`` alone loses datagrams independently; with ``--burst N`` the same average loss
    comes in bursts of N datagrams on average (a Gilbert-Elliott chain).
    """
    config = ImpairmentConfig(
        loss=_option("--loss", parse_rate, loss),
        delay=_option("--delay", parse_duration, delay),
        jitter=_option("--jitter", parse_duration, jitter),
        duplicate=_option("--dup", parse_rate, dup),
        reorder=_option("--reorder", parse_rate, reorder),
        seed=seed,
    )
    if burst is not None:
        try:
            config = config.with_bursts(config.loss, burst)
        except ValueError as error:
            raise ValueError(f"--burst: {error}") from None
    return config


def _option(name: str, parse: Callable[[str], float], text: str) -> float:
    try:
        return parse(text)
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None


def _positive_duration(name: str, text: str) -> float:
    value = _option(name, parse_duration, text)
    if value <= 0:
        raise ValueError(f"{name}: must be longer than zero, got {text!r}")
    return value


def _fail(message: str) -> NoReturn:
    typer.echo(f"udpchat: {message}", err=True)
    raise typer.Exit(1)


LossOption = Annotated[
    str,
    typer.Option(
        help="Datagrams lost, e.g. 20% or 0.2.", metavar="RATE", rich_help_panel=IMPAIRMENT_PANEL
    ),
]
BurstOption = Annotated[
    float | None,
    typer.Option(
        help="Lose in bursts of N datagrams on average (same overall --loss).",
        metavar="N",
        rich_help_panel=IMPAIRMENT_PANEL,
    ),
]
DelayOption = Annotated[
    str,
    typer.Option(
        help="One-way delay, e.g. 30ms.", metavar="DURATION", rich_help_panel=IMPAIRMENT_PANEL
    ),
]
JitterOption = Annotated[
    str,
    typer.Option(
        help="Uniform +/- variation of the delay, e.g. 10ms.",
        metavar="DURATION",
        rich_help_panel=IMPAIRMENT_PANEL,
    ),
]
DupOption = Annotated[
    str,
    typer.Option(
        help="Datagrams duplicated, e.g. 1%.", metavar="RATE", rich_help_panel=IMPAIRMENT_PANEL
    ),
]
ReorderOption = Annotated[
    str,
    typer.Option(
        help="Datagrams held back so that later ones overtake them, e.g. 5%.",
        metavar="RATE",
        rich_help_panel=IMPAIRMENT_PANEL,
    ),
]
SeedOption = Annotated[
    int,
    typer.Option(
        help="Random seed: the same seed gives the same fate to the same datagrams.",
        rich_help_panel=IMPAIRMENT_PANEL,
    ),
]
KeyOption = Annotated[
    str | None,
    typer.Option(
        "--key",
        envvar="UDPCHAT_KEY",
        show_envvar=True,
        show_default=False,
        help="Room key (a passphrase): only members with it can join; it enters every "
        "session's key exchange and pads datagrams to four sizes (traffic is encrypted "
        "with or without it). Make a strong one with 'udpchat keygen'. "
        "Prefer the environment variable: a command line is visible to other users.",
    ),
]


# --- commands ---------------------------------------------------------------------------------


@app.command()
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
) -> None:
    """Run an impairing UDP proxy between clients and a relay until Ctrl-C."""
    from udpchat.netem import NetemProxy, format_counters

    try:
        listen_at = parse_hostport(listen, allow_port_zero=True)
        upstream_at = parse_hostport(upstream)
        config = impairment_config(
            loss=loss, burst=burst, delay=delay, jitter=jitter, dup=dup, reorder=reorder, seed=seed
        )
    except ValueError as error:
        _fail(str(error))
    proxy = NetemProxy(listen_at, upstream_at, config)
    try:
        proxy.start()
    except OSError as error:
        _fail(f"cannot start the proxy: {error}")
    typer.echo(
        f"netem: {format_hostport(proxy.address)} -> {format_hostport(upstream_at)}, "
        f"mean loss {config.mean_loss:.1%}; Ctrl-C to stop"
    )
    try:
        _wait_for_interrupt()
    finally:
        counters = proxy.counters
        proxy.stop()
        typer.echo(format_counters(counters))


def _wait_for_interrupt() -> None:
    """Block until Ctrl-C."""
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


@app.command()
def relay(
    host: Annotated[str, typer.Option(help="Address to listen on (:: for all, IPv6).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="UDP port to listen on (0: any free port).")] = (
        DEFAULT_PORT
    ),
    heartbeat: Annotated[
        str, typer.Option(help="Heartbeat interval told to clients.", metavar="DURATION")
    ] = "1s",
    timeout: Annotated[
        str, typer.Option(help="Evict a member silent this long.", metavar="DURATION")
    ] = "10s",
    max_members: Annotated[
        int, typer.Option(help=f"Most members at once (at most {MAX_MEMBERS_LISTED}).")
    ] = MAX_MEMBERS_LISTED,
    history: Annotated[int, typer.Option(help="Room events kept for catch-up.")] = 200,
    max_per_host: Annotated[
        int,
        typer.Option(
            help="Most members from one host (an IPv4 address, an IPv6 /64, or loopback): "
            "raise it for a big group behind one NAT."
        ),
    ] = 64,
    max_per_network: Annotated[
        int, typer.Option(help="Most members from one network (an IPv4 /24 or IPv6 /64).")
    ] = 256,
    key: KeyOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Log every session event.")] = False,
    loss: LossOption = "0",
    burst: BurstOption = None,
    delay: DelayOption = "0",
    jitter: JitterOption = "0",
    dup: DupOption = "0",
    reorder: ReorderOption = "0",
    seed: SeedOption = 0,
) -> None:
    """Run the relay that fans every message out to the room."""
    try:
        if not 0 <= port <= 65535:
            raise ValueError(f"--port: expected a number from 0 to 65535, got {port}")
        heartbeat_s = _positive_duration("--heartbeat", heartbeat)
        timeout_s = _positive_duration("--timeout", timeout)
        if timeout_s <= heartbeat_s:
            raise ValueError("--timeout must be longer than --heartbeat")
        if not 1 <= max_members <= MAX_MEMBERS_LISTED:
            raise ValueError(
                f"--max-members: expected 1 to {MAX_MEMBERS_LISTED}, got {max_members}"
            )
        if history < 0:
            raise ValueError(f"--history: expected 0 or more, got {history}")
        caps = (("--max-per-host", max_per_host), ("--max-per-network", max_per_network))
        for name, value in caps:
            if value < 1:
                raise ValueError(f"{name}: expected 1 or more, got {value}")
        config = impairment_config(
            loss=loss, burst=burst, delay=delay, jitter=jitter, dup=dup, reorder=reorder, seed=seed
        )
    except ValueError as error:
        _fail(str(error))
    from udpchat.relay_core import RelayConfig
    from udpchat.relay_server import RelayOptions, run_relay

    options = RelayOptions(
        host=host,
        port=port,
        config=RelayConfig(
            heartbeat=heartbeat_s,
            timeout=timeout_s,
            max_members=max_members,
            history=history,
            max_members_per_host=max_per_host,
            max_members_per_network=max_per_network,
        ),
        impairment=config,
        key=key or None,
    )
    try:
        code = run_relay(options, verbose=verbose)
    except OSError as error:
        _fail(
            f"cannot start the relay on {format_hostport((host, port))}: {error.strerror or error}"
        )
    raise typer.Exit(code)


@app.command()
def join(
    nick: Annotated[str, typer.Argument(help="Your nickname in the room.")],
    server: Annotated[
        str, typer.Option(help="The relay, HOST:PORT.", metavar="HOST:PORT")
    ] = f"127.0.0.1:{DEFAULT_PORT}",
    json_output: Annotated[
        bool, typer.Option("--json", help="Print one JSON object per event, for programs.")
    ] = False,
    key: KeyOption = None,
    loss: LossOption = "0",
    burst: BurstOption = None,
    delay: DelayOption = "0",
    jitter: JitterOption = "0",
    dup: DupOption = "0",
    reorder: ReorderOption = "0",
    seed: SeedOption = 0,
) -> None:
    """Join the room as NICK: interactive on a terminal, line by line from a pipe."""
    try:
        problem = nick_error(nick)
        if problem is not None:
            raise ValueError(f"bad nickname {nick!r}: {problem}")
        server_at = parse_hostport(server)
        config = impairment_config(
            loss=loss, burst=burst, delay=delay, jitter=jitter, dup=dup, reorder=reorder, seed=seed
        )
    except ValueError as error:
        _fail(str(error))
    from udpchat.client import ClientOptions, run_client

    options = ClientOptions(nick=nick, server=server_at, impairment=config, key=key or None)
    raise typer.Exit(run_client(options, json_output=json_output))


@app.command()
def keygen() -> None:
    """Print a new random room key (150 bits) to give the relay and every member."""
    from udpchat.seal import KEYGEN_BITS, generate_passphrase

    key = generate_passphrase()
    typer.echo(key)
    typer.echo(
        f"A random room key of {KEYGEN_BITS} bits, alone on standard output. Give the same\n"
        "key to the relay and to every member, in the environment rather than with --key\n"
        "(other users can see command lines):\n"
        f"    UDPCHAT_KEY={key} udpchat relay --host 0.0.0.0\n"
        f"    UDPCHAT_KEY={key} udpchat join NICK --server HOST:PORT\n"
        "Pass it on over a channel you trust: whoever has it can read the room and join it.",
        err=True,
    )


@app.command()
def demo(
    members: Annotated[int, typer.Option(help="Bot members in the room.")] = 4,
    messages: Annotated[int, typer.Option(help="Messages each bot sends.")] = 50,
    loss: Annotated[
        str, typer.Option(help="Datagrams lost on each bot's link, each way.", metavar="RATE")
    ] = "25%",
    seed: Annotated[int, typer.Option(help="Random seed of the simulated network.")] = 1,
    rate: Annotated[float, typer.Option(help="Messages per second per bot.")] = 10.0,
    json_output: Annotated[
        bool, typer.Option("--json", help="No live display; print one JSON object at the end.")
    ] = False,
) -> None:
    """Bots chat through a relay on a lossy loopback network, then over plain UDP: compare.

    Exits with status 1 if the reliable run lost, duplicated or reordered any message.
    """

    from rich.console import Console

    from udpchat.demo import DemoConfig, DemoError, run_demo

    try:
        config = DemoConfig(
            members=members,
            messages=messages,
            rate=rate,
            loss=_option("--loss", parse_rate, loss),
            seed=seed,
        )
    except ValueError as error:
        message = str(error)
        _fail(message if message.startswith("--") else f"--{message}")
    try:
        result = run_demo(config, None if json_output else Console())
    except (DemoError, OSError) as error:
        _fail(f"demo: {error}")
    except KeyboardInterrupt:
        _fail("demo: interrupted")
    if json_output:
        typer.echo(json.dumps(result.to_dict()))
    raise typer.Exit(0 if result.ok else 1)


@app.command()
def bench(
    loss: Annotated[
        str | None,
        typer.Option(
            help="Loss rates to sweep, in %, comma-separated [default: 0,5,10,20,30; quick: 0,20].",
            metavar="LIST",
            show_default=False,
        ),
    ] = None,
    messages: Annotated[
        int | None,
        typer.Option(
            help="Messages the sender sends per run [default: 400; quick: 40].", show_default=False
        ),
    ] = None,
    members: Annotated[
        str | None,
        typer.Option(
            help="Room sizes to sweep, sender included, comma-separated [default: 3,6; quick: 3].",
            metavar="LIST",
            show_default=False,
        ),
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="A CI-sized run, well under a minute.")
    ] = False,
    out: Annotated[
        str, typer.Option(help="Directory for results.json and bench.png.", metavar="DIR")
    ] = "bench-results",
    no_kernel_loss: Annotated[
        bool,
        typer.Option(
            "--no-kernel-loss",
            help="Simulate loss in user space even where kernel loss (root, netns) works.",
        ),
    ] = False,
) -> None:
    """Measure udpchat against a plain UDP forwarder and a TCP relay on the same traffic."""
    import sys
    from dataclasses import replace
    from pathlib import Path

    from udpchat.benchmark.report import run_bench
    from udpchat.benchmark.sweep import SweepConfig, parse_numbers

    try:
        config = SweepConfig.quick() if quick else SweepConfig()
        config = replace(
            config,
            losses=config.losses if loss is None else parse_numbers("--loss", loss),
            members=config.members if members is None else parse_numbers("--members", members, int),
            messages=config.messages if messages is None else messages,
            kernel_loss=False if no_kernel_loss else None,
        )
    except ValueError as error:
        _fail(str(error))
    command = "udpchat " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "udpchat bench"
    raise typer.Exit(run_bench(config, Path(out), command=command))


@app.command()
def load(
    members: Annotated[
        str, typer.Option(help="Room sizes to measure, comma-separated.", metavar="LIST")
    ] = "100,500,1000",
    chat_rate: Annotated[
        float, typer.Option(help="Chat messages a second for the whole room.")
    ] = 2.0,
    duration: Annotated[
        float, typer.Option(help="Seconds measured per phase (idle, then chat).")
    ] = 10.0,
    json_output: Annotated[bool, typer.Option("--json", help="One JSON object per size.")] = False,
) -> None:
    """Load a relay with many simulated members: CPU share, memory per member, join time."""
    from udpchat.benchmark.load import format_table, run_load

    try:
        sizes = [int(part) for part in members.split(",") if part.strip()]
        if not sizes or any(size < 1 for size in sizes):
            raise ValueError
    except ValueError:
        _fail(f"--members: expected positive numbers separated by commas, got {members!r}")
    if duration <= 0 or chat_rate < 0:
        _fail("--duration must be positive and --chat-rate not negative")
    results = run_load(
        sizes,
        chat_rate=chat_rate,
        duration=duration,
        progress=lambda text: typer.echo(text, err=True),
    )
    if json_output:
        for result in results:
            typer.echo(json.dumps(result.to_dict()))
    else:
        typer.echo(format_table(results))
