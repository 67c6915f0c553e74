"""`remoteapprest`: the REST API's command-line client (a placeholder in this build)."""

from __future__ import annotations

import sys

import click


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    add_help_option=False,
)
def main() -> None:
    """Not available yet: exits 2 whatever the arguments."""
    click.echo("remoteapprest: not yet available", err=True)
    sys.exit(2)
