"""End to end on a pseudo-terminal: ``udpchat join`` in interactive mode, as a person sees it.

The checks are on the raw bytes the program writes, so they stay loose about exactly how
prompt_toolkit draws, but strict about what matters: a line from the room is printed above
the prompt, and the prompt comes back under it.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from tests.e2e_support import ROOT, members, relay_config, running_relay, udpchat_env
from udpchat import events as ev
from udpchat.exitcodes import ExitCode
from udpchat.relay_server import RelayOptions, RelayServer

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal"),
]

ERASE_BELOW = b"\x1b[J"


class Terminal:
    """A child process on a pseudo-terminal; ``screen`` is every byte it wrote.

    With ``cpr`` it answers cursor position requests as a terminal does (always "row 1"),
    which prompt_toolkit needs before it draws the status bar under the prompt."""

    CPR_REQUEST = b"\x1b[6n"

    def __init__(self, *args: str, columns: int = 100, rows: int = 30, cpr: bool = False) -> None:
        import fcntl
        import pty
        import termios

        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        env = udpchat_env()
        env["TERM"] = "xterm"
        if not cpr:
            env["PROMPT_TOOLKIT_NO_CPR"] = "1"  # nobody answers cursor position requests
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "udpchat", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            cwd=ROOT,
            start_new_session=True,
        )
        os.close(slave)
        self.screen = b""
        self._cpr = cpr

    def read_until(self, condition: Callable[[bytes], bool], timeout: float) -> bytes:
        end = time.monotonic() + timeout
        while not condition(self.screen):
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"screen so far: {self.screen!r}")
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    data = os.read(self.master, 65536)
                except OSError:  # the child closed the terminal
                    break
                self.screen += data
                if self._cpr:
                    for _ in range(data.count(self.CPR_REQUEST)):
                        os.write(self.master, b"\x1b[1;1R")
        return self.screen

    def wait(self, timeout: float) -> int:
        """The exit status, reading the terminal meanwhile: a child whose output nobody
        reads blocks in its last writes and never exits."""
        self.read_until(lambda _: self.proc.poll() is not None, timeout)
        return self.proc.wait(timeout)

    def type(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        os.close(self.master)


@pytest.fixture
def terminals() -> Iterator[list[Terminal]]:
    started: list[Terminal] = []
    yield started
    for terminal in started:
        terminal.close()


def after(screen: bytes, text: bytes) -> bytes:
    """What was written after the last occurrence of ``text`` (nothing if it is not there)."""
    at = screen.rfind(text)
    return b"" if at < 0 else screen[at + len(text) :]


@pytest.mark.timeout(30)
def test_interactive_join_prints_the_room_above_the_prompt(terminals: list[Terminal]) -> None:
    with running_relay() as relay:
        alice = Terminal("join", "alice", "--server", f"127.0.0.1:{relay.address[1]}")
        terminals.append(alice)
        # Welcomed, not only prompting (the prompt comes first): a bob who joined before
        # alice's WELCOME would be in its member list, with no join notice to show.
        alice.read_until(lambda s: b"alice>" in s and b"you are " in s, 10)

        with members(relay.address, "bob") as [bob]:
            bob.client.say("hello alice")
            screen = alice.read_until(lambda s: b"alice>" in after(s, b"<bob> hello alice"), 5)
            # the prompt was erased before the line and drawn again under it
            before = screen[: screen.rindex(b"hello alice")]
            assert ERASE_BELOW in after(before, b"alice>")
            assert b"-- bob joined" in screen

            # Each key goes in once the prompt is back: between two prompts the terminal is
            # in cooked mode for a moment, where Ctrl-D would be taken by the tty itself.
            alice.type(b"hi bob\r")
            bob.log.wait_event(ev.MessageReceived, 5, lambda e: e.text == "hi bob")
            alice.read_until(lambda s: b"alice>" in after(s, b"<alice> hi bob"), 5)

            alice.type(b"/who\r")
            alice.read_until(lambda s: b"alice>" in after(s, b"in the room (2): alice, bob"), 5)

            alice.type(b"\x04")  # Ctrl-D leaves politely
            left = bob.log.wait_event(ev.MemberLeft, 5)
            assert (left.nick, left.reason) == ("alice", "quit")
        assert alice.wait(10) == 0
        assert b"Traceback" not in alice.screen


@pytest.mark.timeout(30)
def test_connecting_shows_the_address_and_ctrl_c_clears_then_leaves(
    terminals: list[Terminal],
) -> None:
    # a bound socket that never answers: no ICMP, so the client keeps trying to connect
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        dan = Terminal("join", "dan", "--server", f"127.0.0.1:{port}", cpr=True)
        terminals.append(dan)
        dan.read_until(lambda s: f"connecting to 127.0.0.1:{port} as dan".encode() in s, 10)
        assert b"in a room of" not in dan.screen
        dan.read_until(lambda s: b"dan>" in s, 5)
        dan.type(b"half a thought")
        dan.read_until(lambda s: b"half a thought" in s, 5)
        dan.type(b"\x03")  # clears the line; the client stays
        dan.type(b"/help\r")  # runs alone: the half-typed line is gone
        # the prompt is drawn again under the help: the terminal is back in raw mode, where
        # Ctrl-C is a key (while lines are printed it is cooked for a moment)
        dan.read_until(lambda s: b"dan>" in after(s, b"Ctrl-C clears the line"), 5)
        assert b"half a thought/help" not in dan.screen
        dan.type(b"\x03")  # on an empty line: leave
        assert dan.wait(10) == ExitCode.INTERRUPTED
    assert b"Traceback" not in dan.screen
    assert b"session closed" not in dan.screen  # it was never in a session


@pytest.mark.timeout(30)
def test_no_relay_fails_at_once_on_a_terminal(terminals: list[Terminal]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dan = Terminal("join", "dan", "--server", f"127.0.0.1:{port}")
    terminals.append(dan)
    screen = dan.read_until(lambda s: b"on that port?" in s, 5)
    assert dan.wait(5) == ExitCode.FAILURE
    assert f"nothing is listening at 127.0.0.1:{port}".encode() in screen
    assert screen.count(b"could not join") == 1  # said once, not again on stderr


@pytest.mark.timeout(40)
def test_a_relay_outage_shows_in_the_status_bar(terminals: list[Terminal]) -> None:
    relay = RelayServer(RelayOptions(host="127.0.0.1", port=0, config=relay_config())).start()
    try:
        alice = Terminal("join", "alice", "--server", f"127.0.0.1:{relay.address[1]}", cpr=True)
        terminals.append(alice)
        alice.read_until(lambda s: b"alice in a room of 1" in s, 10)
    finally:
        relay.stop(goodbye=False)  # gone without a word, as a killed relay is
    # the client notices the silence within its 5 s, then counts the outage and the attempts
    outage = (b"lost the relay", b"relay lost", b"rejoin attempt")
    screen = alice.read_until(lambda s: all(text in s for text in outage), 20)
    assert b"in a room of" not in after(screen, b"relay lost")
    alice.read_until(lambda s: b"alice>" in after(s, b"trying to rejoin"), 5)
    alice.type(b"\x04")
    assert alice.wait(10) == ExitCode.OK


@pytest.mark.timeout(30)
def test_a_refused_join_on_a_terminal_says_so_once(terminals: list[Terminal]) -> None:
    with running_relay() as relay, members(relay.address, "carol"):
        carol = Terminal("join", "carol", "--server", f"127.0.0.1:{relay.address[1]}")
        terminals.append(carol)
        carol.read_until(lambda s: b"is taken" in s, 10)
        assert carol.wait(5) == ExitCode.REFUSED
    assert carol.screen.count(b"refused to let us in") == 1
    assert b"session closed" not in carol.screen
