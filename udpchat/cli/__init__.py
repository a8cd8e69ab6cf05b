"""Command-line entry point: parse options, build a config, call the library.

One module per group of commands, all on the one Typer ``app`` of :mod:`udpchat.cli.common`
(shared options, parsing and the help style); each registers its commands when imported,
and the order of the imports below is the order ``udpchat --help`` lists them in.
"""

from __future__ import annotations

# isort: off
from udpchat.cli.common import app, format_hostport, impairment_config, main, parse_hostport
from udpchat.cli import netem, relay, join, keys, tools
from udpchat.cli.tools import parse_loss_percents

# isort: on

__all__ = [
    "app", "format_hostport", "impairment_config", "join", "keys", "main", "netem",
    "parse_hostport", "parse_loss_percents", "relay", "tools",
]
