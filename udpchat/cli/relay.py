"""``udpchat relay``: the room's relay, with its limits and its identity key."""

from __future__ import annotations

import errno
import sys
from typing import Annotated

import typer

from udpchat.cli.common import (
    DEFAULT_PORT,
    FLAG,
    RELAY_HOST_HELP,
    RELAY_PORT_HELP,
    BurstOption,
    Command,
    DelayOption,
    DupOption,
    IdentityOption,
    JitterOption,
    KeyOption,
    LossOption,
    ReorderOption,
    SeedOption,
    _fail,
    _key_origin,
    _option,
    _positive_duration,
    _relay_key,
    app,
    format_hostport,
    impairment_config,
)
from udpchat.exitcodes import ExitCode
from udpchat.impair import parse_duration
from udpchat.messages import MAX_MEMBERS_LISTED
from udpchat.relay.config import RelayConfig
from udpchat.stores import DEFAULT_ROOM, StoreError, StoreURL, default_store_path, parse_store

__all__ = ["LIMITS_PANEL", "relay"]

_RELAY_DEFAULTS = RelayConfig()
_SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
MAX_SOCKET_BUFFER = 1 << 30


def _size(name: str, text: str) -> int:
    """Bytes from ``4194304``, ``4096K``, ``4M`` or ``1G`` (0: the system's default)."""
    cleaned = text.strip().upper().removesuffix("B")
    unit = cleaned[-1:] if cleaned[-1:] in _SIZE_UNITS else ""
    digits = cleaned[: len(cleaned) - len(unit)]
    if not digits.isdigit():
        raise ValueError(f"{name}: expected a size such as 4M, 512K or 262144, got {text!r}")
    size = int(digits) * _SIZE_UNITS[unit]
    if size > MAX_SOCKET_BUFFER:
        raise ValueError(f"{name}: expected at most 1G, got {text!r}")
    return size


LIMITS_PANEL = "Limits that keep a room open"


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
    admission_burst: Annotated[
        int,
        typer.Option(
            help="JOINs the whole relay admits at once...",
            metavar="N",
            rich_help_panel=LIMITS_PANEL,
        ),
    ] = _RELAY_DEFAULTS.admission_burst,
    admission_rate: Annotated[
        float,
        typer.Option(
            help="...then this many a second; beyond, a joiner is told to come back a little "
            "later (BUSY), so that a room rejoining at once is let in at a steady pace.",
            metavar="PER_S",
            rich_help_panel=LIMITS_PANEL,
        ),
    ] = _RELAY_DEFAULTS.admission_rate,
    socket_buffer: Annotated[
        str,
        typer.Option(
            help="Receive and send buffer of the relay's socket (bytes, or with K or M): "
            "room for a burst of joins; much larger only delays datagrams when the relay is "
            "behind. The system may grant less (Linux: net.core.rmem_max); the start line "
            "says what it granted.",
            metavar="SIZE",
            rich_help_panel=LIMITS_PANEL,
        ),
    ] = "1M",
    notice_window: Annotated[
        str,
        typer.Option(
            help="In a room of more than --batch-notices-above members, join and leave "
            "notices wait this long to go out together as one event (0: each at once).",
            metavar="DURATION",
        ),
    ] = "200ms",
    notice_fanout: Annotated[
        float,
        typer.Option(
            help="Notices in a room of N wait at least N / PER_S s (up to 1 s): about PER_S "
            "notice datagrams a second at most (inf: only --notice-window).",
            metavar="PER_S",
        ),
    ] = _RELAY_DEFAULTS.notice_fanout,
    batch_notices_above: Annotated[
        int,
        typer.Option(help="Room size above which notices are batched.", metavar="N"),
    ] = _RELAY_DEFAULTS.batch_notices_above,
    member_page: Annotated[
        int,
        typer.Option(
            help="In a room of more than N members, WELCOME lists only the first N and /who "
            f"fetches the rest N at a time (0: always everyone; at most {MAX_MEMBERS_LISTED}).",
            metavar="N",
        ),
    ] = _RELAY_DEFAULTS.member_page,
    welcome_page: Annotated[
        int,
        typer.Option(
            help="How many of the first names WELCOME lists in a room large enough to be "
            f"paged (at most --member-page; 1 to {MAX_MEMBERS_LISTED}).",
            metavar="N",
        ),
    ] = _RELAY_DEFAULTS.welcome_page,
    store: Annotated[
        str | None,
        typer.Option(
            help="Where the room is kept: sqlite:PATH (the room survives a restart), "
            "memory: (it ends with the relay), or redis://HOST:PORT/DB (rediss:// for TLS; "
            "every relay on the same Redis and --room is one room; needs udpchat\\[redis]). "
            "Default: a SQLite file named after the listen address in the state directory.",
            metavar="URL",
        ),
    ] = None,
    room: Annotated[
        str | None,
        typer.Option(
            help=f"The room's name on Redis, with --store redis://... (default: {DEFAULT_ROOM}).",
            metavar="NAME",
        ),
    ] = None,
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

    Examples:

    On 127.0.0.1 (this machine only), port 9000:
      udpchat relay --port 9000
    The room in a file of your choosing (it survives a restart):
      udpchat relay --store sqlite:/var/lib/udpchat/room.sqlite3
    One room shared by the relays on a Redis:
      udpchat relay --store redis://127.0.0.1:6379/0 --room lobby
    For the whole LAN, with up to 200 members behind one NAT:
      udpchat relay --host 0.0.0.0 --max-per-host 200
    With a room key from 'udpchat keygen > room.key' (members need it too):
      UDPCHAT_KEY=$(cat room.key) udpchat relay
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
        window_s = _option("--notice-window", parse_duration, notice_window)
        if not 0 <= window_s <= 10:
            raise ValueError(f"--notice-window: expected 0 to 10 s, got {notice_window}")
        if not notice_fanout > 0:  # nan fails too
            raise ValueError(f"--notice-fanout: expected a number above 0, got {notice_fanout:g}")
        if batch_notices_above < 0:
            raise ValueError(
                f"--batch-notices-above: expected 0 or more, got {batch_notices_above}"
            )
        if not 0 <= member_page <= MAX_MEMBERS_LISTED:
            raise ValueError(
                f"--member-page: expected 0 to {MAX_MEMBERS_LISTED}, got {member_page}"
            )
        if not 1 <= welcome_page <= MAX_MEMBERS_LISTED:
            raise ValueError(
                f"--welcome-page: expected 1 to {MAX_MEMBERS_LISTED}, got {welcome_page}"
            )
        if history < 0:
            raise ValueError(f"--history: expected 0 or more, got {history}")
        counts = (
            ("--max-per-host", max_per_host),
            ("--max-per-network", max_per_network),
            ("--flood-burst", flood_burst),
            ("--handshake-burst", handshake_burst),
            ("--admission-burst", admission_burst),
        )
        for name, value in counts:
            if value < 1:
                raise ValueError(f"{name}: expected 1 or more, got {value}")
        rates = (
            ("--flood-rate", flood_rate),
            ("--handshake-rate", handshake_rate),
            ("--admission-rate", admission_rate),
        )
        for name, rate in rates:
            if not rate > 0 or rate == float("inf"):
                raise ValueError(f"{name}: expected a number above 0, got {rate:g}")
        buffer_bytes = _size("--socket-buffer", socket_buffer)
        config = impairment_config(
            loss=loss, burst=burst, delay=delay, jitter=jitter, dup=dup, reorder=reorder, seed=seed
        )
        if store is None and room is not None:
            raise StoreError("--room names a room on Redis: it goes with --store redis://...")
        room_store = (
            parse_store(store, room)
            if store is not None
            else StoreURL("sqlite", default_store_path(host, port))
        )
        # What the options above do not say, the relay's own checks do (one line each).
        relay_config = RelayConfig(
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
            admission_burst=admission_burst,
            admission_rate=admission_rate,
            notice_window=window_s,
            notice_fanout=notice_fanout,
            batch_notices_above=batch_notices_above,
            member_page=member_page,
            welcome_page=welcome_page,
        )
    except (ValueError, StoreError) as error:
        _fail(str(error))
    relay_key = _relay_key(identity, host, port)
    from udpchat.styled import folded

    # Folded between words on a terminal: a fingerprint cut at the last column is misread.
    said = f"{relay_key.fingerprint} ({_key_origin(relay_key)})"
    typer.echo(folded(sys.stderr, said, prefix="relay key fingerprint: "), err=True)
    typer.echo(folded(sys.stderr, str(room_store), prefix="room store: "), err=True)
    from udpchat.relay_server import RelayOptions, run_relay

    options = RelayOptions(
        host=host,
        port=port,
        config=relay_config,
        impairment=config,
        key=key or None,
        static_key=relay_key.private,
        socket_buffer=buffer_bytes,
        store=room_store,
    )
    try:
        code = run_relay(options, verbose=verbose)
    except (StoreError, OSError) as error:
        if relay_key.created:  # a relay that never started leaves no identity behind
            relay_key.path.unlink(missing_ok=True)
        if isinstance(error, StoreError):
            _fail(str(error), ExitCode.FAILURE)
        why = error.strerror or str(error)
        if error.errno == errno.EADDRINUSE:
            why = "the port is in use (by another relay, or another program)"
        _fail(f"cannot start the relay on {format_hostport((host, port))}: {why}", ExitCode.FAILURE)
    raise typer.Exit(code)
