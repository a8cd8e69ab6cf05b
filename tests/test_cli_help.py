"""Every command's --help at 80 columns reads as prose: lines break only where the terminal
needs them, and each example is a command under a label that says what it does."""

from __future__ import annotations

import itertools
import re

import pytest
from typer.testing import CliRunner

from udpchat.cli import app
from udpchat.cli.common import reflow

pytestmark = pytest.mark.unit

COMMANDS = ["", "netem", "relay", "join", "relay-key", "forget-relay", "keygen", "demo", "bench",
            "load"]
_BOX = re.compile(r"^[\u2500-\u257f]")  # a panel's frame: options, commands


def help_text(*command: str, columns: int = 80) -> str:
    result = CliRunner().invoke(
        app, [*command, "--help"], env={"COLUMNS": str(columns)}, prog_name="udpchat"
    )
    assert result.exit_code == 0, result.output
    return str(result.output)


def prose(text: str) -> list[list[str]]:
    """The help's paragraphs before its first panel, as lists of lines (one leading space
    of margin taken off)."""
    paragraphs: list[list[str]] = [[]]
    for line in text.splitlines()[3:]:  # after the usage line and the blank around it
        if _BOX.match(line):
            break
        if not line.strip():
            paragraphs.append([])
        else:
            paragraphs[-1].append(line.rstrip()[1:])
    return [p for p in paragraphs if p]


def needless_breaks(lines: list[str], width: int) -> list[str]:
    """Prose lines that end although the next line's first word would have fitted."""
    bad = []
    for line, after in itertools.pairwise(lines):
        if line.startswith(" ") or after.startswith(" "):
            continue  # an example: line by line on purpose
        if len(line) + 1 + len(after.split()[0]) <= width:
            bad.append(line)
    return bad


@pytest.mark.parametrize("command", COMMANDS)
def test_prose_breaks_only_where_the_terminal_ends(command: str) -> None:
    text = help_text(*filter(None, [command]))
    for paragraph in prose(text):
        assert needless_breaks(paragraph, 80 - 2) == [], paragraph


def test_command_list_breaks_only_where_its_column_ends() -> None:
    """``udpchat --help``: each command's summary in its column, wrapped only as needed."""
    rows: list[list[str]] = []
    start = width = 0
    for line in help_text().split("Commands", 1)[1].splitlines()[1:]:
        if not line.startswith("\u2502"):
            break
        if line[2] != " ":  # a command's first line: "│ relay         Run the relay..."
            start = len(line) - len(line[2:].split(None, 1)[1]) if not rows else start
            width = len(line) - 2 - start
            rows.append([])
        rows[-1].append(line[start:-1].rstrip())
    assert len(rows) >= 9
    for row in rows:
        assert needless_breaks(row, width) == [], row


@pytest.mark.parametrize("command", ["relay", "netem", "bench", "load"])
def test_every_example_has_a_label_of_its_own(command: str) -> None:
    """Under "Examples:", a label (what the example does) and the command indented under
    it, pair by pair: as many labels as commands."""
    paragraphs = prose(help_text(command))
    at = next(i for i, p in enumerate(paragraphs) if p == ["Examples:"])
    examples = paragraphs[at + 1]
    labels = examples[0::2]
    commands = examples[1::2]
    assert len(labels) == len(commands) >= 2, examples
    assert all(label.endswith(":") and not label.startswith(" ") for label in labels)
    assert all(line.startswith("  ") and "udpchat " in line for line in commands)


def test_relay_help_labels_its_five_examples() -> None:
    paragraphs = prose(help_text("relay"))
    examples = paragraphs[paragraphs.index(["Examples:"]) + 1]
    assert len(examples) == 10
    assert "--host 0.0.0.0" in examples[7] and "LAN" in examples[6]
    assert "UDPCHAT_KEY" in examples[9] and "key" in examples[8]


def test_reflow_joins_prose_and_keeps_examples() -> None:
    text = "First line\n    goes on.\n\n    Label:\n      cmd --x\n    Other:\n      cmd\n"
    assert reflow(text) == "First line goes on.\n\nLabel:\n  cmd --x\nOther:\n  cmd"
    assert reflow(None) is None
