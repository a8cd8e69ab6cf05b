"""The relays a user has met, and whether to trust the key a relay shows: SSH's known_hosts.

The first time a client meets a relay it remembers the relay's public key, per address, in
``known_relays`` in the state directory; afterwards it trusts that key and refuses any
other, loudly, because a relay whose key changed is either a relay whose key was replaced or
someone between the user and the relay. The refusal names both fingerprints and the command
that accepts the new key once its operator has confirmed it. ``--relay-key FINGERPRINT``
skips the first-use leap of faith: only that key is trusted, and it is remembered.

The file has one line per relay, ``HOST:PORT KEY``: the address as the user gave it,
normalised (a host name in lowercase, an IPv6 address compressed and in brackets), and the
32-byte public key in base64. Blank lines, ``#`` comments and lines udpchat does not
understand are kept as they are. Two names of one relay (``localhost:9000`` and
``127.0.0.1:9000``) are two entries, as in SSH.

A client given several relays of one room (``--server A,B``, protocol.md 6.9) checks each
against its own entry: every relay has its own key and its own first use, and a relay whose
key changed is refused (the client leaves it out and uses the others) however well the
other relays of the list are known. ``--relay-key`` then names one fingerprint per key the
room's relays hold, and each relay must show one of them.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import shlex
from collections.abc import Callable, Collection
from pathlib import Path

from udpchat.client.config import Trust
from udpchat.endpoint import Address
from udpchat.identity import KEY_SIZE, fingerprint
from udpchat.state import state_dir, write_atomic

__all__ = [
    "KNOWN_RELAYS", "Trust", "TrustStore", "default_path", "forget_command",
    "normalise_address",
]

KNOWN_RELAYS = "known_relays"
_WARNING = "someone may be intercepting your connection, or the relay got a new key"


def default_path() -> Path:
    return state_dir() / KNOWN_RELAYS


def normalise_address(address: Address) -> str:
    """``HOST:PORT`` as the file writes it: one spelling per address the user could type."""
    host, port = address
    host = host.strip().removeprefix("[").removesuffix("]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        host = host.lower().rstrip(".")
    else:
        host = str(ip)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def forget_command(address: Address) -> str:
    """The command that makes udpchat forget the key it knows for ``address``."""
    return f"udpchat forget-relay {shlex.quote(normalise_address(address))}"


def _decode_key(text: str) -> bytes | None:
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) == KEY_SIZE else None


def _entry(line: str) -> tuple[str, bytes] | None:
    """``(address, key)`` from one line of the file, or None for anything else."""
    fields = line.split()
    if len(fields) < 2 or fields[0].startswith("#"):
        return None
    key = _decode_key(fields[1])
    return None if key is None else (fields[0].lower(), key)


def _address_of(line: str) -> str | None:
    entry = _entry(line)
    return None if entry is None else entry[0]


class TrustStore:
    """The ``known_relays`` file, and the trust decisions made with it.

    ``notify`` is told, one line at a time, what the user should know without being asked:
    a key remembered for the first time, or one that could not be saved.
    """

    def __init__(self, path: Path | None = None, notify: Callable[[str], None] | None = None):
        self.path = default_path() if path is None else path
        self._notify = notify

    def _lines(self) -> list[str]:
        try:
            return self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []

    def _write(self, lines: list[str]) -> None:
        write_atomic(self.path, "".join(line + "\n" for line in lines).encode("utf-8"))

    def known(self, address: Address) -> bytes | None:
        """The public key remembered for ``address``, if any."""
        wanted = normalise_address(address).lower()
        for line in self._lines():
            entry = _entry(line)
            if entry is not None and entry[0] == wanted:
                return entry[1]
        return None

    def remember(self, address: Address, public: bytes) -> None:
        """Make ``public`` the one key remembered for ``address``."""
        if len(public) != KEY_SIZE:
            raise ValueError(f"a relay public key has {KEY_SIZE} bytes, not {len(public)}")
        wanted = normalise_address(address).lower()
        lines = [line for line in self._lines() if _address_of(line) != wanted]
        lines.append(f"{wanted} {base64.b64encode(public).decode('ascii')}")
        self._write(lines)

    def forget(self, address: Address) -> bytes | None:
        """Forget the key of ``address``; the key that was remembered, or None if none was."""
        wanted = normalise_address(address).lower()
        forgotten: bytes | None = None
        kept = []
        for line in self._lines():
            entry = _entry(line)
            if entry is None or entry[0] != wanted:
                kept.append(line)
            elif forgotten is None:
                forgotten = entry[1]
        if forgotten is not None:
            self._write(kept)
        return forgotten

    def check(
        self, address: Address, public: bytes, pinned: str | Collection[str] | None = None
    ) -> str | None:
        """None to trust ``public`` as the key of ``address``; otherwise one line saying why not.

        ``pinned`` is a canonical fingerprint (``identity.parse_fingerprint``), or several:
        only those keys are trusted. Never raises: a file that cannot be read refuses, one
        that cannot be written is reported and the key trusted all the same.
        """
        shown = normalise_address(address)
        if len(public) != KEY_SIZE:
            return f"relay {shown} sent a malformed key ({len(public)} bytes): not connecting"
        offered = fingerprint(public)
        if pinned is not None:
            pins = (pinned,) if isinstance(pinned, str) else tuple(pinned)
            if offered not in pins:
                return (
                    f"REFUSED: relay {shown} has key fingerprint {offered}, not "
                    f"{' or '.join(pins)} as given with --relay-key; {_WARNING} (its "
                    "operator can print the right one with 'udpchat relay-key')"
                )
            try:
                known = self.known(address)
            except (OSError, UnicodeDecodeError):
                known = None
            if known != public:
                self._save(address, public, f"relay {shown}: key {offered} pinned with --relay-key")
            return None
        try:
            known = self.known(address)
        except (OSError, UnicodeDecodeError) as error:
            return f"cannot read the known relays in {self.path}: {error}; not connecting"
        if known is None:
            self._save(
                address, public, f"first connection to {shown}; its key fingerprint is {offered}"
            )
            return None
        if known == public:
            return None
        return (
            f"REFUSED: the key of relay {shown} has CHANGED: it was {fingerprint(known)}, "
            f"it is now {offered}; {_WARNING}. Only if the relay's operator confirms "
            f"{offered}, join with --relay-key {offered}, or accept it with: "
            f"{forget_command(address)}"
        )

    def _save(self, address: Address, public: bytes, news: str) -> None:
        try:
            self.remember(address, public)
        except (OSError, UnicodeDecodeError) as error:
            self._tell(f"{news} (not remembered: cannot write {self.path}: {error})")
        else:
            self._tell(f"{news} (remembered in {self.path})")

    def _tell(self, line: str) -> None:
        if self._notify is not None:
            self._notify(line)

    def for_server(
        self, address: Address, pinned: str | Collection[str] | None = None
    ) -> Trust:
        """The ``ClientOptions.trust`` callback for a client of the relay at ``address``."""

        def trust(public: bytes) -> str | None:
            return self.check(address, public, pinned)

        return trust
