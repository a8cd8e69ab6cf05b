"""What one line typed by the user asks for: a chat message or a slash command.

Parsing is pure and checked here, before anything reaches the client, so a typo such as
``/mgs bob hi`` is explained on the spot instead of being posted to the whole room, and the
limits the relay would enforce (nickname rules, text size) fail fast with the same wording.
Every problem is a :class:`CommandError` whose message is one line meant for the user.

A line that does not start with ``/`` is chat text, kept exactly as typed (leading spaces
included). ``//`` escapes a literal leading slash: ``//etc/hosts`` says ``/etc/hosts``.
"""

from __future__ import annotations

from dataclasses import dataclass

from udpchat.errors import UsageError
from udpchat.messages import text_error
from udpchat.names import COMMAND_PREFIX, nick_error
from udpchat.wire import MAX_REASON_BYTES

__all__ = [
    "COMMAND_NAMES", "HELP", "ActionCommand", "Command", "CommandError", "HelpCommand",
    "NickCommand", "PrivateCommand", "QuitCommand", "SayCommand", "StatsCommand", "WhoCommand",
    "parse_command",
]


class CommandError(UsageError, ValueError):
    """A line that cannot be sent; ``str(error)`` is a one-line explanation for the user."""


@dataclass(frozen=True, slots=True)
class SayCommand:
    text: str


@dataclass(frozen=True, slots=True)
class ActionCommand:
    """``/me waves``: shown to the room as ``* nick waves``."""

    text: str


@dataclass(frozen=True, slots=True)
class PrivateCommand:
    to: str
    text: str


@dataclass(frozen=True, slots=True)
class NickCommand:
    nick: str


@dataclass(frozen=True, slots=True)
class WhoCommand:
    pass


@dataclass(frozen=True, slots=True)
class QuitCommand:
    reason: str = ""


@dataclass(frozen=True, slots=True)
class StatsCommand:
    pass


@dataclass(frozen=True, slots=True)
class HelpCommand:
    pass


Command = (
    SayCommand
    | ActionCommand
    | PrivateCommand
    | NickCommand
    | WhoCommand
    | QuitCommand
    | StatsCommand
    | HelpCommand
)

HELP = """\
Type a line and press Enter to send it to the room. Commands:
  /me TEXT          act: shown as "* yournick TEXT"
  /msg NICK TEXT    send TEXT to NICK only
  /nick NEW         change your nickname
  /who              list who is in the room
  /stats            show the link statistics (round-trip time, retransmissions, loss)
  /help             show this help
  /quit [MESSAGE]   leave the room, telling the others MESSAGE
  //TEXT            send a line that starts with "/" (//etc says /etc)
Keys: Tab completes a nickname anywhere ("bo<Tab>" gives "bob: " at the start of a
line, "bob " elsewhere) and commands; Up and Down recall what you typed.
Ctrl-C clears the line (Up brings it back); on an empty line it leaves, as Ctrl-D does."""

COMMAND_NAMES = ("/help", "/me", "/msg", "/nick", "/quit", "/stats", "/who")
"""Every command, for completion; ``//`` is an escape, not a command."""

_BARE: dict[str, Command] = {"who": WhoCommand(), "stats": StatsCommand(), "help": HelpCommand()}
_SHOWN_NAME_LIMIT = 24  # an unknown command is echoed back, shortened to keep one short line


def parse_command(line: str) -> Command:
    """Parse one line of input (without its line terminator) into a command.

    Raise :class:`CommandError` for anything that cannot be sent; nothing else is raised.
    """
    if line.startswith(COMMAND_PREFIX * 2):
        return SayCommand(_text(line[1:]))
    if not line.startswith(COMMAND_PREFIX):
        return SayCommand(_text(line))
    # Any whitespace separates the name from its arguments, not only a space.
    parts = line[1:].split(maxsplit=1)
    name = parts[0] if parts and not line[1:2].isspace() else ""
    rest = parts[1] if len(parts) > 1 and name else ""
    match name.lower():
        case "me":
            if not rest:
                raise CommandError("usage: /me TEXT")
            return ActionCommand(_text(rest))
        case "msg":
            return _private(rest)
        case "nick":
            if not rest:
                raise CommandError("usage: /nick NEW")
            return NickCommand(_nick(rest.rstrip()))
        case "quit":
            return QuitCommand(_reason(rest.strip()))
        case "who" | "stats" | "help" as command:
            if rest.strip():
                raise CommandError(f"/{command} takes no arguments")
            return _BARE[command]
    if not name:
        raise CommandError("a command name must follow '/'; try /help (// sends a '/')")
    raise CommandError(f"unknown command /{_shorten(name)}; try /help")


def _private(rest: str) -> PrivateCommand:
    parts = rest.split(maxsplit=1)
    if len(parts) < 2:
        raise CommandError("usage: /msg NICK TEXT")
    return PrivateCommand(_nick(parts[0]), _text(parts[1]))


def _text(text: str) -> str:
    if not text.strip():
        raise CommandError("empty message")
    error = text_error(text)
    if error is not None:
        raise CommandError(error)
    return _encodable(text)


def _nick(nick: str) -> str:
    error = nick_error(nick)
    if error is not None:
        raise CommandError(f"bad nickname {_shorten(nick)!r}: {error}")
    return nick


def _reason(reason: str) -> str:
    size = len(reason.encode("utf-8", "surrogatepass"))
    if size > MAX_REASON_BYTES:
        raise CommandError(f"quit message is {size} bytes; the limit is {MAX_REASON_BYTES}")
    return _encodable(reason)


def _encodable(text: str) -> str:
    """Refuse lone surrogates: stdin decoded with ``surrogateescape`` turns bad bytes into them,
    and they cannot travel as a msgpack str."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise CommandError("the line is not valid UTF-8 text") from None
    return text


def _shorten(text: str) -> str:
    if len(text) <= _SHOWN_NAME_LIMIT:
        return text
    return text[: _SHOWN_NAME_LIMIT - 1] + "…"
