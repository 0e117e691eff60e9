"""One output-format option for every command that prints results: ``--format json|md|table``.

``FormatOpt`` is the option (``-f`` for short); ``JsonAlias`` keeps an older ``--json`` flag
working, hidden from ``--help``; :func:`resolve_format` merges the two and checks the value
against what the command can print. :func:`print_table` prints rows as a table (``table``) or as
a Markdown table (``md``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Annotated, Optional

import typer

from secfm.errors import SecfmError

FORMATS = ("json", "md", "table")

FormatOpt = Annotated[Optional[str], typer.Option("--format", "-f", help="json, md or table (the command's default when not given).")]
JsonAlias = Annotated[bool, typer.Option("--json", hidden=True, help="Same as --format json.")]


def resolve_format(fmt: str | None, as_json: bool = False, default: str = "json", allowed: Sequence[str] = FORMATS) -> str:
    """The format to print: ``--format`` if given, else json for the ``--json`` alias, else ``default``."""
    if fmt is None:
        fmt = "json" if as_json else default
    fmt = fmt.lower()
    if fmt not in allowed:
        raise SecfmError(f"unknown --format {fmt!r} (one of {', '.join(allowed)})")
    if as_json and fmt != "json":
        raise SecfmError(f"--json and --format {fmt} disagree; give one of them")
    return fmt


def _md_cell(value: object) -> str:
    return " ".join(str(value).split()).replace("|", "\\|")


def markdown_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Rows as a Markdown table under a ``## title`` heading (what ``print_table(..., "md")`` prints)."""
    lines = [f"## {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[object]], fmt: str = "table") -> None:
    """Rows as a terminal table (``table``) or a Markdown table (``md``) on standard output."""
    rows = [list(r) for r in rows]
    if fmt == "md":
        print(markdown_table(title, columns, rows))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(str(c) for c in row))
    Console().print(table)
