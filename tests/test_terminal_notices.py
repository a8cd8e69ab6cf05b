"""Lines of ours on stderr around the chat screen (a relay met for the first time, why a join
failed, a bad option) are folded between words to the terminal's width, indented under
their text; for a pipe they stay one line each."""

from __future__ import annotations

import io
import os

import pytest

from udpchat.cli import join as join_cli
from udpchat.styled import fold, folded

pytestmark = pytest.mark.unit

FINGERPRINT = "q3vz-7dkm-a2ne-xw5h-jr4t-ub6c-l7so-fy2i"
NEWS = (
    f"first connection to 192.168.1.10:9000; its key fingerprint is {FINGERPRINT} "
    "(remembered in /home/op/.local/state/udpchat/known_relays)"
)


class FakeTerminal(io.StringIO):
    """A stream that says it is a terminal of ``columns`` columns."""

    def __init__(self, columns: int) -> None:
        super().__init__()
        self.columns = columns

    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        return 2


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> FakeTerminal:
    stream = FakeTerminal(49)
    monkeypatch.setattr(
        os, "get_terminal_size", lambda fd=1: os.terminal_size((stream.columns, 24))
    )
    return stream


@pytest.mark.parametrize("width", [48, 60, 79, 99])
def test_a_notice_folds_between_words_under_its_text(width: int) -> None:
    lines = fold(NEWS, width).splitlines()
    assert len(lines) > 1
    assert all(len(line) <= width for line in lines)
    assert lines[0].startswith("udpchat: first connection")
    indented = [line for line in lines[1:] if line.startswith(" " * len("udpchat: "))]
    assert len(indented) >= len(lines) - 2  # all but a path too long for the indent
    assert " ".join(line.strip() for line in lines) == "udpchat: " + NEWS  # no word cut
    assert any(FINGERPRINT in line for line in lines)  # never broken at its dashes
    assert any("/home/op/.local/state/udpchat/known_relays" in line for line in lines)


def test_a_line_for_a_pipe_stays_one_line() -> None:
    assert folded(io.StringIO(), NEWS) == "udpchat: " + NEWS


def test_the_first_connection_news_fits_a_narrow_pane(
    terminal: FakeTerminal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stderr", terminal)
    join_cli._tell(NEWS)
    lines = terminal.getvalue().splitlines()
    assert len(lines) > 2 and all(len(line) < 49 for line in lines), lines
    assert " ".join(line.strip() for line in lines) == "udpchat: " + NEWS


def test_why_a_join_failed_fits_the_terminal(terminal: FakeTerminal) -> None:
    from udpchat.terminal import InteractiveUI

    ui = InteractiveUI(stderr=terminal, colour=False)
    ui._failed = "cannot join: nothing answered at 127.0.0.1:9000 in 10 s: is a relay running?"
    ui._report_failure()
    lines = terminal.getvalue().splitlines()
    assert len(lines) == 3 and all(len(line) < 49 for line in lines), lines
    assert " ".join(line.strip() for line in lines) == f"udpchat: {ui._failed}"


def test_the_relays_fingerprint_is_never_cut() -> None:
    said = f"{FINGERPRINT} (from /home/op/.local/state/udpchat/relay-0.0.0.0-9000.key)"
    lines = fold(said, 48, prefix="relay key fingerprint: ").splitlines()
    assert lines[0] == "relay key fingerprint:"
    assert lines[1].startswith(FINGERPRINT)
    assert all(len(line) <= 48 for line in lines[:2])
    assert "/home/op/.local/state/udpchat/relay-0.0.0.0-9000.key)" in lines
