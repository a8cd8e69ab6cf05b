"""Command-line entry point: parse options, build a config, call the library.

Every command stays thin: it turns option strings into values, and any mistake becomes one
line on stderr, never a traceback, with the exit statuses of :mod:`udpchat.exitcodes` (2 for
a bad command line, as the option parser itself uses). The impairment options are shared by
``netem``, ``relay`` and ``join``, so a lossy network is spelled the same way everywhere, and
a rate means the same everywhere: ``20%`` or ``0.2``.
"""

from __future__ import annotations

import ipaddress
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from udpchat import __version__
from udpchat.endpoint import Address
from udpchat.exitcodes import SHORT_MEANING, ExitCode
from udpchat.impair import ImpairmentConfig, parse_duration, parse_rate
from udpchat.messages import MAX_MEMBERS_LISTED
from udpchat.names import nick_error
from udpchat.relay.config import RelayConfig
from udpchat.transport import format_address

if TYPE_CHECKING:
    from udpchat.identity import RelayKey


def _no_placeholder(ctx: Any) -> None:
    return None


class Command(TyperCommand):
    """A command whose help reads as a person expects: ``NICK`` in the usage line, not
    ``{NICK}``; no ``<bool>`` after a flag that takes no value, no ``<str>`` after an
    argument whose name already says what it is."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperArgument) and param.metavar:
                param.display_type_rich = _no_placeholder  # type: ignore[method-assign]

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces: list[str] = super().collect_usage_pieces(ctx)
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in pieces]

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = FLAG
        return option


class Group(TyperGroup):
    """The top-level command, with the same help as :class:`Command`."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = FLAG
        return option


FLAG = ""  # the metavar of an on/off flag: it takes no value, so none is shown
app = typer.Typer(
    cls=Group,
    help="A multi-user terminal chat over UDP with its own reliability layer.\n\n"
    "Exit status: " + ", ".join(f"{code.value} {text}" for code, text in SHORT_MEANING.items()),
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
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version.", metavar=FLAG
        ),
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
    scheme, separator, rest = value.partition("://")
    if separator:
        raise ValueError(
            f"invalid address {text!r}: no {scheme + separator!r} before it, "
            f"just HOST:PORT ({rest or example})"
        )
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
    return format_address(address)


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


def _relay_key(identity: Path | None, host: str, port: int) -> RelayKey:
    """The relay's key from ``identity`` or its default file, created if missing; one error
    line if it cannot be used."""
    from udpchat.identity import IdentityError, default_key_path, load_or_create

    path = default_key_path(host, port) if identity is None else identity.expanduser()
    try:
        return load_or_create(path)
    except IdentityError as error:
        _fail(str(error), ExitCode.FAILURE)
    except OSError as error:
        _fail(f"cannot use the relay key {path}: {error.strerror or error}", ExitCode.FAILURE)


def _key_origin(key: RelayKey) -> str:
    return f"created now in {key.path}" if key.created else f"from {key.path}"


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


def _fail(message: str, code: ExitCode = ExitCode.USAGE) -> NoReturn:
    """One line on stderr and exit: by default for a bad command line (status 2); runtime
    failures pass ``ExitCode.FAILURE``."""
    typer.echo(f"udpchat: {message}", err=True)
    raise typer.Exit(code)


LossOption = Annotated[
    str,
    typer.Option(
        help="Datagrams lost, e.g. 20% or 0.2 (the same).",
        metavar="RATE",
        rich_help_panel=IMPAIRMENT_PANEL,
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
        metavar="N",
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
        metavar="PASSPHRASE",
        help="Room key (a passphrase): only members with it can join; it enters every "
        "session's key exchange and pads datagrams to four sizes (traffic is encrypted "
        "with or without it). Make a strong one with 'udpchat keygen'. "
        "Prefer the environment variable: a command line is visible to other users.",
    ),
]
IdentityOption = Annotated[
    Path | None,
    typer.Option(
        "--identity",
        metavar="PATH",
        show_default=False,
        help="The relay's key file, by which members know it is the relay they met before: "
        "created on first start, mode 0600. Default: relay-HOST-PORT.key in "
        "$XDG_STATE_HOME/udpchat (~/.local/state/udpchat). Relays serving one room share one.",
    ),
]
RELAY_HOST_HELP = "Address to listen on (:: for all, IPv6)."
RELAY_PORT_HELP = "UDP port to listen on (0: any free port)."


# --- commands ---------------------------------------------------------------------------------

_RELAY_DEFAULTS = RelayConfig()
LIMITS_PANEL = "Limits that keep a room open"


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

    Example: the relay on port 9000 behind 20% loss, joined through port 9100:

      udpchat netem --listen 127.0.0.1:9100 --upstream 127.0.0.1:9000 --loss 20%
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


@app.command(cls=Command)
def relay(
    host: Annotated[str, typer.Option(help=RELAY_HOST_HELP, metavar="HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help=RELAY_PORT_HELP, metavar="PORT")] = DEFAULT_PORT,
    heartbeat: Annotated[
        str, typer.Option(help="Heartbeat interval told to clients.", metavar="DURATION")
    ] = "1s",
    timeout: Annotated[
        str, typer.Option(help="Evict a member silent this long.", metavar="DURATION")
    ] = "10s",
    history: Annotated[
        int, typer.Option(help="Room events kept for catch-up (0 or more).", metavar="N")
    ] = _RELAY_DEFAULTS.history,
    max_members: Annotated[
        int,
        typer.Option(
            help=f"Most members at once (1 to {MAX_MEMBERS_LISTED}).",
            metavar="N",
            rich_help_panel=LIMITS_PANEL,
        ),
    ] = MAX_MEMBERS_LISTED,
    max_per_host: Annotated[
        int,
        typer.Option(
            help="Most members from one host (an IPv4 address, an IPv6 /64, or loopback): "
            "raise it for a big group behind one NAT.",
            metavar="N",
            rich_help_panel=LIMITS_PANEL,
        ),
    ] = _RELAY_DEFAULTS.max_members_per_host,
    max_per_network: Annotated[
        int,
        typer.Option(
            help="Most members from one network (an IPv4 /24 or IPv6 /64).",
            metavar="N",
            rich_help_panel=LIMITS_PANEL,
        ),
    ] = _RELAY_DEFAULTS.max_members_per_network,
    flood_burst: Annotated[
        int,
        typer.Option(
            help="Requests (messages, /msg, /nick, /who) a member may send at once...",
            metavar="N",
            rich_help_panel=LIMITS_PANEL,
        ),
    ] = _RELAY_DEFAULTS.flood_burst,
    flood_rate: Annotated[
        float,
        typer.Option(
            help="...then this many a second; beyond, requests are refused. Raise both for "
            "bots that post quickly.",
            metavar="PER_S",
            rich_help_panel=LIMITS_PANEL,
        ),
    ] = _RELAY_DEFAULTS.flood_rate,
    handshake_burst: Annotated[
        int,
        typer.Option(
            help="JOINs one host may make at once (after its address is proved)...",
            metavar="N",
            rich_help_panel=LIMITS_PANEL,
        ),
    ] = _RELAY_DEFAULTS.handshake_burst,
    handshake_rate: Annotated[
        float,
        typer.Option(
            help="...then this many a second. Raise both when many members join from one "
            "address at once.",
            metavar="PER_S",
            rich_help_panel=LIMITS_PANEL,
        ),
    ] = _RELAY_DEFAULTS.handshake_rate,
    key: KeyOption = None,
    identity: IdentityOption = None,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="Log every session event.", metavar=FLAG)
    ] = False,
    loss: LossOption = "0",
    burst: BurstOption = None,
    delay: DelayOption = "0",
    jitter: JitterOption = "0",
    dup: DupOption = "0",
    reorder: ReorderOption = "0",
    seed: SeedOption = 0,
) -> None:
    """Run the relay that fans every message out to the room, until Ctrl-C; it prints its
    key fingerprint first, for members to check.

    Examples (on 127.0.0.1; for the whole LAN; with a room key):

      udpchat relay --port 9000
      udpchat relay --host 0.0.0.0 --max-per-host 200
      UDPCHAT_KEY='a passphrase' udpchat relay
    """
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
        counts = (
            ("--max-per-host", max_per_host),
            ("--max-per-network", max_per_network),
            ("--flood-burst", flood_burst),
            ("--handshake-burst", handshake_burst),
        )
        for name, value in counts:
            if value < 1:
                raise ValueError(f"{name}: expected 1 or more, got {value}")
        for name, rate in (("--flood-rate", flood_rate), ("--handshake-rate", handshake_rate)):
            if not rate > 0 or rate == float("inf"):
                raise ValueError(f"{name}: expected a number above 0, got {rate:g}")
        config = impairment_config(
            loss=loss, burst=burst, delay=delay, jitter=jitter, dup=dup, reorder=reorder, seed=seed
        )
    except ValueError as error:
        _fail(str(error))
    relay_key = _relay_key(identity, host, port)
    typer.echo(
        f"relay key fingerprint: {relay_key.fingerprint} ({_key_origin(relay_key)})", err=True
    )
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
            flood_burst=flood_burst,
            flood_rate=flood_rate,
            handshake_burst=handshake_burst,
            handshake_rate=handshake_rate,
        ),
        impairment=config,
        key=key or None,
        static_key=relay_key.private,
    )
    try:
        code = run_relay(options, verbose=verbose)
    except OSError as error:
        _fail(
            f"cannot start the relay on {format_hostport((host, port))}: {error.strerror or error}",
            ExitCode.FAILURE,
        )
    raise typer.Exit(code)


JOIN_HELP = "\n\n".join(
    [
        "Join the room as NICK: interactive on a terminal, line by line from a pipe.",
        "On a terminal, type a line and press Enter to say it. Commands: /me TEXT, "
        "/msg NICK TEXT, /nick NEW, /who, /stats, /help, /quit [MESSAGE]; //TEXT says a line "
        "that starts with '/'. Tab completes nicknames and commands; Up and Down recall what "
        "you typed. Ctrl-D leaves; Ctrl-C clears a half-typed line (Up brings it back) and "
        "leaves on an empty one. NO_COLOR=1 turns colour off, UDPCHAT_BELL=0 the bell when "
        "somebody mentions you.",
        "From a pipe, every line is a message or a command, run in order once the relay has "
        "let you in, and the client leaves once the relay has everything. Errors go to stderr "
        "with their input line number; --json prints one JSON object per event on stdout "
        "(docs/json-events.md).",
        "Examples:\n\n"
        "  udpchat join alice --server 127.0.0.1:9000\n"
        "  printf 'hello\\n/who\\n' | udpchat join bot --json\n"
        "  udpchat join carol --server 192.168.1.20:9000 --loss 20%",
    ]
)


@app.command(cls=Command, help=JOIN_HELP)
def join(
    nick: Annotated[
        str,
        typer.Argument(
            help="Your nickname in the room: up to 32 characters, no spaces, not starting "
            "with '/'.",
            metavar="NICK",
            show_default=False,
        ),
    ],
    server: Annotated[
        str, typer.Option(help="The relay, HOST:PORT.", metavar="HOST:PORT")
    ] = f"127.0.0.1:{DEFAULT_PORT}",
    json_output: Annotated[
        bool,
        typer.Option("--json", help="Print one JSON object per event, for programs.", metavar=FLAG),
    ] = False,
    key: KeyOption = None,
    relay_key: Annotated[
        str | None,
        typer.Option(
            "--relay-key",
            metavar="FINGERPRINT",
            show_default=False,
            help="Trust only the relay whose key has this fingerprint (its operator gets it "
            "from 'udpchat relay-key'), and remember it. Without it the key is remembered "
            "on first use and any other key is refused.",
        ),
    ] = None,
    loss: LossOption = "0",
    burst: BurstOption = None,
    delay: DelayOption = "0",
    jitter: JitterOption = "0",
    dup: DupOption = "0",
    reorder: ReorderOption = "0",
    seed: SeedOption = 0,
) -> None:
    from udpchat.identity import parse_fingerprint

    try:
        problem = nick_error(nick)
        if problem is not None:
            raise ValueError(f"bad nickname {nick!r}: {problem}")
        server_at = parse_hostport(server)
        pinned = None if relay_key is None else parse_fingerprint(relay_key)
        config = impairment_config(
            loss=loss, burst=burst, delay=delay, jitter=jitter, dup=dup, reorder=reorder, seed=seed
        )
    except ValueError as error:
        _fail(str(error))
    from udpchat.client import ClientOptions, run_client
    from udpchat.known_relays import TrustStore

    # Like ssh's "permanently added" line: news for a person, noise in a script's stderr.
    notify = _tell if sys.stderr.isatty() else None
    trust = TrustStore(notify=notify).for_server(server_at, pinned=pinned)
    options = ClientOptions(
        nick=nick, server=server_at, impairment=config, key=key or None, trust=trust
    )
    raise typer.Exit(run_client(options, json_output=json_output))


def _tell(line: str) -> None:
    typer.echo(f"udpchat: {line}", err=True)


@app.command("relay-key", cls=Command)
def relay_key_command(
    identity: IdentityOption = None,
    host: Annotated[str, typer.Option(help=RELAY_HOST_HELP)] = "127.0.0.1",
    port: Annotated[int, typer.Option(help=RELAY_PORT_HELP)] = DEFAULT_PORT,
) -> None:
    """Print the fingerprint of a relay's key, alone on standard output, without starting it.

    Publish it: members check it, or pin it with 'udpchat join --relay-key'.

    The key file is created if it does not exist yet, as the relay would create it.
    """
    if not 0 <= port <= 65535:
        _fail(f"--port: expected a number from 0 to 65535, got {port}")
    key = _relay_key(identity, host, port)
    typer.echo(key.fingerprint)
    wildcard = host in ("0.0.0.0", "::", "")
    server = format_hostport(("HOST" if wildcard else host, port))
    typer.echo(
        f"The fingerprint of the relay key {_key_origin(key)}. Members can pin it with:\n"
        f"    udpchat join NICK --server {server} --relay-key {key.fingerprint}",
        err=True,
    )


@app.command("forget-relay", cls=Command)
def forget_relay(
    server: Annotated[
        str, typer.Argument(help="The relay, HOST:PORT, as given to 'udpchat join --server'.")
    ],
) -> None:
    """Forget the key remembered for a relay, so that the next join accepts its new one.

    Only once its operator confirmed the new fingerprint: someone may be intercepting.
    """
    from udpchat.identity import fingerprint
    from udpchat.known_relays import TrustStore, normalise_address

    try:
        address = parse_hostport(server)
    except ValueError as error:
        _fail(str(error))
    store = TrustStore()
    shown = normalise_address(address)
    try:
        forgotten = store.forget(address)
    except (OSError, UnicodeDecodeError) as error:
        _fail(f"cannot update {store.path}: {error}", ExitCode.FAILURE)
    if forgotten is None:
        _fail(f"no key is remembered for {shown} in {store.path}", ExitCode.FAILURE)
    typer.echo(
        f"forgot the key of {shown} (fingerprint {fingerprint(forgotten)}); the next "
        "'udpchat join' remembers the key the relay shows then"
    )


@app.command(cls=Command)
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


@app.command(cls=Command)
def demo(
    members: Annotated[
        int, typer.Option(help="Bot members in the room (2 to 32).", metavar="N")
    ] = 4,
    messages: Annotated[
        int, typer.Option(help="Messages each bot sends (1 to 10,000).", metavar="N")
    ] = 50,
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
    json_output: Annotated[
        bool,
        typer.Option(
            "--json", help="No live display; print one JSON object at the end.", metavar=FLAG
        ),
    ] = False,
) -> None:
    """Bots chat through a relay on a lossy loopback network, then over plain UDP: compare.

    Exits with status 1 if the reliable run lost, duplicated or reordered any message.

    Examples:

      udpchat demo
      udpchat demo --members 6 --loss 30% --messages 100 --seed 7
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

      udpchat bench --quick
      udpchat bench --loss 0%,10%,20% --members 3,10
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
            "pip install -e ./bench (from a udpchat checkout)"
        )

    try:
        config = SweepConfig.quick() if quick else SweepConfig()
        config = replace(
            config,
            losses=config.losses if loss is None else parse_loss_percents("--loss", loss),
            members=config.members if members is None else parse_numbers("--members", members, int),
            messages=config.messages if messages is None else messages,
            kernel_loss=False if no_kernel_loss else None,
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
        typer.Option(help="Seconds measured per phase (idle, then chat).", metavar="SECONDS"),
    ] = 10.0,
    json_output: Annotated[
        bool, typer.Option("--json", help="One JSON object per size.", metavar=FLAG)
    ] = False,
) -> None:
    """Load a relay with many simulated members: CPU share, memory per member, join time.

    Example:

      udpchat load --members 100,1000 --duration 5
    """
    try:  # a distribution of its own (bench/), installed on request
        from udpchat_bench.load import format_table, run_load
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] != "udpchat_bench":
            raise
        _fail(
            "udpchat load needs the benchmark tools: "
            "pip install -e ./bench (from a udpchat checkout)"
        )

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
