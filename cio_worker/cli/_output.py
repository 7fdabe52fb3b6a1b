"""How `cio-worker` prints: one table printer, one time format, one `--json` flag.

Tables and times are for people; `--json` is for scripts: one JSON document on stdout and nothing
else (logs go to stderr), so `cio-worker ... --json | jq` always parses.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterable, Sequence
from typing import Any

#: Longest cell a table shows, characters (`--json` has the whole value).
MAX_CELL_CHARS = 80


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """The `--json` option every listing command takes."""
    parser.add_argument("--json", action="store_true", help="print one JSON document")


def print_json(document: Any, *, sort_keys: bool = True) -> None:
    """`document` as indented JSON on stdout. `sort_keys=False` keeps the fields in the order a
    record lists them (dead letters, check results), as those commands always printed them."""
    print(json.dumps(document, indent=2, sort_keys=sort_keys))


def when(seconds: float | None) -> str | None:
    """Unix seconds as local `YYYY-MM-DD HH:MM:SS`; None stays None (an empty cell)."""
    if seconds is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def print_table(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], *, title: str | None = None
) -> None:
    """A table on stdout: None shows as an empty cell, anything else as `str()` cut to
    MAX_CELL_CHARS; a table with no rows is followed by `(none)`."""
    from rich.console import Console  # imported here: rich is only needed when printing
    from rich.table import Table

    table = Table(*columns, title=title)
    count = 0
    for row in rows:
        table.add_row(*("" if value is None else str(value)[:MAX_CELL_CHARS] for value in row))
        count += 1
    Console().print(table)
    if not count:
        print("(none)")
