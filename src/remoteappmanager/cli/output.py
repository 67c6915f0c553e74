"""Terminal output shared by the command-line tools: error lines, tables, policies."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import NoReturn

import click

from remoteappmanager.domain.models import Policy

EMPTY_CELL = "-"


def fail(prog: str, message: str, code: int = 1) -> NoReturn:
    """Print ``prog: error: message`` (one line) on stderr and exit with ``code``."""
    line = " ".join(message.split())
    click.echo(f"{prog}: error: {line}", err=True)
    sys.exit(code)


def render_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], *, decorated: bool = True
) -> list[str]:
    """Lines of a table: aligned with a header when ``decorated``, else one plain line per row.

    Plain lines hold the cells separated by single spaces (an empty cell becomes ``-``), for
    ``read``/``awk``; only the last column may contain spaces.
    """
    cells = [[cell or EMPTY_CELL for cell in row] for row in rows]
    if not decorated:
        return [" ".join(row) for row in cells]
    widths = [len(header) for header in headers]
    for row in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]

    def line(row: Sequence[str]) -> str:
        return "  ".join(
            cell.ljust(width) for cell, width in zip(row, widths, strict=True)
        ).rstrip()

    return [line(headers), line(["-" * width for width in widths]), *(line(row) for row in cells)]


def describe_policy(policy: Policy) -> str:
    """A policy in one short word list, e.g. ``home,view,volume=/data:/data:ro``."""
    parts = [
        word
        for word, allowed in (
            ("home", policy.allow_home),
            ("view", policy.allow_view),
            ("common", policy.allow_common),
            ("startupdata", policy.allow_startup_data),
        )
        if allowed
    ]
    if policy.volume is not None:
        parts.append(f"volume={policy.volume}")
    parts.extend(f"placement={constraint}" for constraint in policy.placement)
    for word, value in (
        ("memory_mb", policy.memory_limit_mb),
        ("cpus", policy.cpu_limit),
        ("pids", policy.pids_limit),
        ("idle_s", policy.idle_timeout_s),
        ("lifetime_s", policy.max_lifetime_s),
    ):
        if value is not None:
            parts.append(f"{word}={value:g}" if isinstance(value, float) else f"{word}={value}")
    if policy.app_license is not None:
        # Last, because a licence is free text and may contain spaces.
        parts.append(f"license={policy.app_license}")
    return ",".join(parts) or EMPTY_CELL
