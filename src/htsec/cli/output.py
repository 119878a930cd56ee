"""How commands print: rich tables on standard output, notes on standard error, JSON for
scripts, and text from servers or requesters made safe for a terminal."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from htsec._time import utc_text

__all__ = ["cell", "emit_json", "err", "out", "shown", "table", "when"]

out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def emit_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))


def when(ts: int | None) -> str:
    if ts is None:
        return "never"
    try:
        return utc_text(ts)
    except ValueError:
        return f"{ts} (not a date)"


def shown(text: object) -> str:
    """Text from a server or a requester, for a terminal: control characters made visible
    (an escape sequence could rewrite the line above a confirmation prompt)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))


def cell(text: object) -> str:
    """:func:`shown`, and safe from rich's markup (``[/x]`` would break the table)."""
    return escape(shown(text))


def table(*columns: str) -> Table:
    t = Table(box=None, pad_edge=False, header_style="bold")
    for c in columns:
        t.add_column(c, no_wrap=c not in ("FILE", "VALUE", "SCOPE"), overflow="fold")
    return t
