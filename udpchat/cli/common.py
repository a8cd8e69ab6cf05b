"""What every command shares: the Typer app, the help style, option types and parsing.

Every command stays thin: it turns option strings into values, and any mistake becomes one
line on stderr, never a traceback, with the exit statuses of :mod:`udpchat.exitcodes` (2 for
a bad command line, as the option parser itself uses). The impairment options are shared by
``netem``, ``relay`` and ``join``, so a lossy network is spelled the same way everywhere, and
a rate means the same everywhere: ``20%`` or ``0.2``.
"""

from __future__ import annotations

import inspect
import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from typer.core import TyperArgument, TyperCommand, TyperGroup

from udpchat import __version__
from udpchat.endpoint import Address
from udpchat.exitcodes import SHORT_MEANING, ExitCode
from udpchat.impair import ImpairmentConfig, parse_duration, parse_rate
from udpchat.transport import format_address

__all__ = [
    "DEFAULT_PORT", "FLAG", "IMPAIRMENT_PANEL", "RELAY_HOST_HELP", "RELAY_PORT_HELP",
    "BurstOption", "Command", "DelayOption", "DupOption", "Group", "IdentityOption",
    "JitterOption", "KeyOption", "LossOption", "ReorderOption", "SeedOption", "app",
    "format_hostport", "impairment_config", "main", "parse_hostport", "reflow", "root",
]

if TYPE_CHECKING:
    from udpchat.identity import RelayKey


def _no_placeholder(ctx: Any) -> None:
    return None


def reflow(text: str | None) -> str | None:
    """Help text as the terminal should wrap it: each prose paragraph one line (the help
    formatter keeps a docstring's line breaks, and then also breaks the lines where the
    terminal ends, so a sentence broke in two places at once); a paragraph with an indented
    line (examples, each under its label) is kept line by line.

    The formatter also takes off whatever indentation all the lines after the first have in
    common: an example is indented only if some line after the first is not (its label)."""
    if text is None:
        return None
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(
        paragraph
        if any(line.startswith(" ") for line in paragraph.splitlines())
        else " ".join(line.strip() for line in paragraph.splitlines())
        for paragraph in paragraphs
    )


class Command(TyperCommand):
    """A command whose help reads as a person expects: ``NICK`` in the usage line, not
    ``{NICK}``; no ``<bool>`` after a flag that takes no value, no ``<str>`` after an
    argument whose name already says what it is; prose wrapped by the terminal alone."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = reflow(self.help)
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
    failures pass ``ExitCode.FAILURE``. On a terminal the line is folded between words to
    its width."""
    import sys

    from udpchat.styled import folded

    typer.echo(folded(sys.stderr, message), err=True)
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
