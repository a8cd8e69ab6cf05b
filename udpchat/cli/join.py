"""``udpchat join``: a member in the terminal, or line by line from a pipe."""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated

import typer

from udpchat.cli.common import (
    DEFAULT_PORT,
    FLAG,
    BurstOption,
    Command,
    DelayOption,
    DupOption,
    JitterOption,
    KeyOption,
    LossOption,
    ReorderOption,
    SeedOption,
    _fail,
    app,
    impairment_config,
    parse_hostport,
)
from udpchat.endpoint import Address
from udpchat.names import nick_error
from udpchat.transport import format_address

__all__ = ["JOIN_HELP", "join", "parse_relays", "run_client"]

if TYPE_CHECKING:
    from udpchat.chat_client import ChatClient, ClientOptions
    from udpchat.events import ClientEvent

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
        "Several relays of one room (--server A,B,...): when the relay of the moment goes "
        "silent for 2 s, the client moves to the next one of the list, round-robin, and "
        "resumes its place there: same nickname, no message missed or sent twice, and the "
        "others see no leave or join. Each relay's key is checked on its own (remembered "
        "on first use, refused if it changes); --relay-key may list one fingerprint per key.",
        "Examples:\n\n"
        "  udpchat join alice --server 127.0.0.1:9000\n"
        "  udpchat join alice --server 10.0.0.1:9000,10.0.0.2:9000\n"
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
        str,
        typer.Option(
            help="The relay, HOST:PORT; or the room's relays, comma-separated, to move to "
            "the next when one goes silent (tried in this order).",
            metavar="HOST:PORT[,HOST:PORT...]",
        ),
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
            metavar="FINGERPRINT[,FINGERPRINT...]",
            show_default=False,
            help="Trust only the relay whose key has this fingerprint (its operator gets it "
            "from 'udpchat relay-key'), and remember it; with several relays, each must "
            "show one of the fingerprints listed. Without it each relay's key is "
            "remembered on first use and any other key is refused.",
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
        relays = parse_relays(server)
        pinned = None if relay_key is None else _fingerprints(relay_key, parse_fingerprint)
        config = impairment_config(
            loss=loss, burst=burst, delay=delay, jitter=jitter, dup=dup, reorder=reorder, seed=seed
        )
    except ValueError as error:
        _fail(str(error))
    from udpchat.chat_client import ClientOptions
    from udpchat.known_relays import TrustStore

    # Like ssh's "permanently added" line: news for a person, noise in a script's stderr.
    notify = _tell if sys.stderr.isatty() else None
    store = TrustStore(notify=notify)
    options = ClientOptions(nick=nick, server=relays[0], impairment=config, key=key or None)
    if len(relays) == 1:
        options = replace(options, trust=store.for_server(relays[0], pinned=pinned))
    else:  # each relay of the list against its own entry (udpchat.known_relays)
        options = replace(
            options,
            fallbacks=relays[1:],
            trust_for=lambda address: store.for_server(address, pinned=pinned),
        )
    raise typer.Exit(run_client(options, json_output=json_output))


def parse_relays(text: str) -> tuple[Address, ...]:
    """``HOST:PORT[,HOST:PORT...]``: the room's relays in the order to try them."""
    parts = text.split(",")
    if len(parts) > 1 and any(not part.strip() for part in parts):
        raise ValueError(f"invalid --server {text!r}: an empty place in the list of relays")
    try:
        relays = tuple(parse_hostport(part) for part in parts)
    except ValueError as error:
        raise ValueError(f"--server: {error}") from None
    if len(set(relays)) != len(relays):
        raise ValueError(f"invalid --server {text!r}: a relay is listed twice")
    versions = {_ip_version(host) for host, _ in relays} - {None}
    if len(versions) > 1:  # names are checked once resolved, when the client starts
        raise ValueError(
            f"invalid --server {text!r}: list relays of one address family (IPv4 or IPv6)"
        )
    return relays


def _ip_version(host: str) -> int | None:
    """4 or 6 for an IP address literal, None for a name."""
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return None


def _fingerprints(text: str, parse: Callable[[str], str]) -> str | tuple[str, ...]:
    """The canonical fingerprint ``--relay-key`` gives, or the several comma-separated."""
    pins = tuple(parse(part) for part in text.split(","))
    return pins[0] if len(pins) == 1 else pins


def run_client(options: ClientOptions, json_output: bool = False) -> int:
    """The ``udpchat join`` command: hand a client to the terminal front end."""
    from udpchat.chat_client import ChatClient
    from udpchat.signals import interrupt_on_signals
    from udpchat.ui import choose_mode, run_ui

    interrupt_on_signals()
    mode = choose_mode(json_output=json_output, stdin=sys.stdin, stdout=sys.stdout)

    def start(on_event: Callable[[ClientEvent], None]) -> ChatClient:
        client = ChatClient(options, on_event)
        try:
            return client.start()
        except KeyboardInterrupt:  # Ctrl-C just as the join went out: leave, do not vanish
            client.quit("")
            raise

    relays = ", ".join(format_address(relay) for relay in (options.server, *options.fallbacks))
    return run_ui(start, mode, server=relays)


def _tell(line: str) -> None:
    """A notice before the chat screen starts (a relay met for the first time): folded
    between words to the terminal's width."""
    from udpchat.styled import folded

    typer.echo(folded(sys.stderr, line), err=True)
