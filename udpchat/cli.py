"""Command-line entry point: parse options, build a config, call the library."""

from __future__ import annotations

from typing import Annotated

import typer

from udpchat import __version__

app = typer.Typer(
    help="A multi-user terminal chat over UDP with its own reliability layer.",
    no_args_is_help=True,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"udpchat {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """udpchat: chat over UDP that survives a lossy network."""


def main() -> None:
    app()
