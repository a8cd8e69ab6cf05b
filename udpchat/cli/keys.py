"""The relay's identity key and the keys a member remembers: ``relay-key``, ``forget-relay``,
and the room key: ``keygen``."""

from __future__ import annotations

import secrets
from typing import Annotated

import typer

from udpchat.cli.common import (
    DEFAULT_PORT,
    RELAY_HOST_HELP,
    RELAY_PORT_HELP,
    Command,
    IdentityOption,
    _fail,
    _key_origin,
    _relay_key,
    app,
    format_hostport,
    parse_hostport,
)
from udpchat.exitcodes import ExitCode

__all__ = ["forget_relay", "keygen", "relay_key_command"]


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
        str,
        typer.Argument(
            help="The relay, HOST:PORT, as given to 'udpchat join --server'.",
            metavar="HOST:PORT",
            show_default=False,
        ),
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

    key = generate_passphrase(secrets.choice)
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
