"""End to end on a pseudo-terminal: ``udpchat join`` in interactive mode, as a person sees it.

The checks are on the raw bytes the program writes, so they stay loose about exactly how
prompt_toolkit draws, but strict about what matters: a line from the room is printed above
the prompt, and the prompt comes back under it.
"""

from __future__ import annotations

import os
import select
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest

from tests.e2e_support import ROOT, members, running_relay, udpchat_env
from udpchat import events as ev

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")

ERASE_BELOW = b"\x1b[J"


class Terminal:
    """A child process on a pseudo-terminal; ``screen`` is every byte it wrote."""

    def __init__(self, *args: str, columns: int = 100, rows: int = 30) -> None:
        import fcntl
        import pty
        import termios

        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        env = udpchat_env()
        env["TERM"] = "xterm"
        env["PROMPT_TOOLKIT_NO_CPR"] = "1"  # nobody answers cursor position requests here
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

    def read_until(self, condition: Callable[[bytes], bool], timeout: float) -> bytes:
        end = time.monotonic() + timeout
        while not condition(self.screen):
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"screen so far: {self.screen!r}")
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    self.screen += os.read(self.master, 65536)
                except OSError:  # the child closed the terminal
                    break
        return self.screen

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
        alice.read_until(lambda s: b"alice>" in s, 10)

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
        assert alice.proc.wait(10) == 0
        assert b"Traceback" not in alice.screen
