import pytest
from hypothesis import given
from hypothesis import strategies as st

from udpchat.commands import (
    COMMAND_NAMES,
    HELP,
    ActionCommand,
    CommandError,
    HelpCommand,
    NickCommand,
    PrivateCommand,
    QuitCommand,
    SayCommand,
    StatsCommand,
    WhoCommand,
    parse_command,
)
from udpchat.messages import MAX_TEXT_BYTES
from udpchat.wire import MAX_REASON_BYTES

pytestmark = [pytest.mark.unit, pytest.mark.timeout(60)]


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("hello", SayCommand("hello")),
        ("  indented code", SayCommand("  indented code")),
        ("bob: hi /me", SayCommand("bob: hi /me")),
        ("//etc/hosts", SayCommand("/etc/hosts")),
        ("// spaced", SayCommand("/ spaced")),
        ("//", SayCommand("/")),
        ("/me waves", ActionCommand("waves")),
        ("/me   waves  twice ", ActionCommand("waves  twice ")),
        ("/ME shouts", ActionCommand("shouts")),
        ("/me\twaves", ActionCommand("waves")),
        ("/msg bob hi there", PrivateCommand("bob", "hi there")),
        ("/msg  bob   hi", PrivateCommand("bob", "hi")),
        ("/msg Zoë ça va", PrivateCommand("Zoë", "ça va")),
        ("/nick robert", NickCommand("robert")),
        ("/nick robert  ", NickCommand("robert")),
        ("/who", WhoCommand()),
        ("/who  ", WhoCommand()),
        ("/stats", StatsCommand()),
        ("/help", HelpCommand()),
        ("/quit", QuitCommand("")),
        ("/quit  gone fishing ", QuitCommand("gone fishing")),
        ("/Quit bye", QuitCommand("bye")),
    ],
)
def test_parses(line: str, command: object) -> None:
    assert parse_command(line) == command


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("/foo", "unknown command /foo; try /help"),
        ("/mgs bob hi", "unknown command /mgs; try /help"),
        ("/", "a command name must follow '/'; try /help (// sends a '/')"),
        ("/ me", "a command name must follow '/'; try /help (// sends a '/')"),
        ("/me", "usage: /me TEXT"),
        ("/me   ", "usage: /me TEXT"),
        ("/msg", "usage: /msg NICK TEXT"),
        ("/msg bob", "usage: /msg NICK TEXT"),
        ("/msg bob   ", "usage: /msg NICK TEXT"),
        ("/nick", "usage: /nick NEW"),
        ("/who me", "/who takes no arguments"),
        ("/stats now", "/stats takes no arguments"),
        ("", "empty message"),
        ("   ", "empty message"),
    ],
)
def test_errors(line: str, message: str) -> None:
    with pytest.raises(CommandError) as caught:
        parse_command(line)
    assert str(caught.value) == message


def test_bad_nicknames_explain_why() -> None:
    with pytest.raises(CommandError, match=r"^bad nickname 'bo b': .*whitespace"):
        parse_command("/nick bo b")
    with pytest.raises(CommandError, match=r"^bad nickname '/bob': .*start with '/'"):
        parse_command("/nick /bob")
    with pytest.raises(CommandError, match=r"^bad nickname .*at most 32 characters"):
        parse_command("/msg " + "x" * 40 + " hi")
    with pytest.raises(CommandError, match="invisible formatting"):
        parse_command("/nick a\u202eb")


def test_text_size_limit_is_in_utf8_bytes() -> None:
    assert parse_command("x" * MAX_TEXT_BYTES) == SayCommand("x" * MAX_TEXT_BYTES)
    with pytest.raises(CommandError, match=f"limit is {MAX_TEXT_BYTES} bytes"):
        parse_command("é" * (MAX_TEXT_BYTES // 2 + 1))
    with pytest.raises(CommandError, match="limit"):
        parse_command("/me " + "x" * (MAX_TEXT_BYTES + 1))
    with pytest.raises(CommandError, match="limit"):
        parse_command("/msg bob " + "x" * (MAX_TEXT_BYTES + 1))


def test_quit_message_limit() -> None:
    assert parse_command("/quit " + "x" * MAX_REASON_BYTES) == QuitCommand("x" * MAX_REASON_BYTES)
    with pytest.raises(CommandError, match="quit message is 513 bytes"):
        parse_command("/quit " + "x" * (MAX_REASON_BYTES + 1))


def test_lone_surrogates_are_refused() -> None:
    # What stdin decoded with surrogateescape makes of invalid UTF-8.
    with pytest.raises(CommandError, match="not valid UTF-8"):
        parse_command(b"caf\xe9".decode("utf-8", "surrogateescape"))
    with pytest.raises(CommandError, match="not valid UTF-8"):
        parse_command("/quit \udcff")


def test_unknown_command_is_shortened_to_one_short_line() -> None:
    with pytest.raises(CommandError) as caught:
        parse_command("/" + "z" * 10_000)
    assert len(str(caught.value)) < 80


def test_help_lists_every_command() -> None:
    for name in COMMAND_NAMES:
        assert name in HELP
    assert "//" in HELP


@given(st.text())
def test_parsing_never_raises_anything_else(line: str) -> None:
    try:
        parse_command(line)
    except CommandError as error:
        assert "\n" not in str(error)


@given(st.text(alphabet=st.characters(codec="utf-8"), min_size=1))
def test_plain_text_is_kept_exactly(line: str) -> None:
    if line.startswith("/") or not line.strip():
        return
    assert parse_command(line) == SayCommand(line)


@given(st.text(alphabet=st.characters(codec="utf-8")))
def test_double_slash_sends_the_rest_with_one_slash(text: str) -> None:
    assert parse_command("//" + text) == SayCommand("/" + text)
