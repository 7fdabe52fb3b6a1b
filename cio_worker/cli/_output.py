"""How `cio-worker` prints: one table printer, one time format, one `--json` flag, one progress bar.

Tables and times are for people; `--json` is for scripts: one JSON document on stdout and nothing
else (logs, notes and progress go to stderr), so `cio-worker ... --json | jq` always parses.
Identifiers are never shortened, on a terminal or in a pipe, so any id a table shows can be pasted
into the next command.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from cio_worker.config import Settings

#: Longest cell a table shows, characters; a longer one ends in `…` (`--json` has the whole
#: value). Identifier columns are never cut.
MAX_CELL_CHARS = 80

#: Columns whose cells are all this short (kinds, statuses, times) are not wrapped either.
SHORT_CELL_CHARS = 20

#: A progress bar is shown (on a terminal only) for operations on at least this many items.
PROGRESS_FROM = 20


def load_settings() -> Settings:
    """The settings from the environment, with logs going to stderr (stdout carries only the
    answer). Every command reads its settings through here."""
    from cio_worker.logs import configure_logging

    settings = Settings.from_env()
    configure_logging(settings)
    return settings


def add_json_flag(parser: argparse.ArgumentParser) -> None:
    """The `--json` option every listing command takes."""
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document on stdout, for scripts"
    )


def print_json(document: Any, *, sort_keys: bool = True) -> None:
    """`document` as indented JSON on stdout. `sort_keys=False` keeps the fields in the order a
    record lists them (dead letters, check results), as those commands always printed them."""
    print(json.dumps(document, indent=2, sort_keys=sort_keys))


def note(text: str) -> None:
    """A remark for the person at the terminal (on stderr, so stdout stays the answer)."""
    print(text, file=sys.stderr)


def when(seconds: float | None) -> str | None:
    """Unix seconds as local `YYYY-MM-DD HH:MM:SS`; None stays None (an empty cell)."""
    if seconds is None:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def is_identifier(column: str) -> bool:
    """Columns kept whole: `id` and every `..._id` (`event_id`, `cio_id`, ...)."""
    return column == "id" or column.endswith("_id")


def print_table(
    columns: Sequence[str],
    rows: Iterable[Sequence[Any]],
    *,
    title: str | None = None,
    whole: Collection[str] | None = None,
) -> None:
    """A table on stdout: None shows as an empty cell, anything else as `str()`.

    Columns in `whole` (default: the identifier columns) are never wrapped or shortened, nor
    are columns of short values; other cells over MAX_CELL_CHARS end in `…`, and on a narrow
    terminal they wrap rather than lose characters. Piped, the table is as wide as its content
    (one line per row, for grep and awk). A table with no rows is followed by `(none)`.
    """
    from rich.console import Console  # imported here: rich is only needed when printing
    from rich.measure import Measurement
    from rich.table import Table

    kept = {c for c in columns if is_identifier(c)} if whole is None else set(whole)
    cells = [["" if value is None else _cut(str(value)) for value in row] for row in rows]
    table = Table(title=title)
    narrowest = 3 * len(columns) + 1  # the borders and padding
    for index, column in enumerate(columns):
        widest = max([len(column), *(len(row[index]) for row in cells)])
        if column in kept or widest <= SHORT_CELL_CHARS:
            table.add_column(column, no_wrap=True, min_width=widest)
            narrowest += widest
        else:
            table.add_column(column, overflow="fold")
            narrowest += min(widest, SHORT_CELL_CHARS)
    for row in cells:
        table.add_row(*row)
    console = Console()
    if not console.is_terminal:  # as wide as the content: a pipe has no width to fit
        unbounded = console.options.update_width(1_000_000)
        console.width = max(console.width, Measurement.get(console, unbounded, table).maximum)
    else:  # a terminal too narrow for the whole values: wider than it (it wraps), never cut
        console.width = max(console.width, narrowest)
    console.print(table, crop=False)
    if not cells:
        print("(none)")


def _cut(text: str) -> str:
    return text if len(text) <= MAX_CELL_CHARS else text[: MAX_CELL_CHARS - 1] + "…"


@contextmanager
def progress_bar(total: int, description: str) -> Iterator[Callable[[int], None]]:
    """Yield `advance(n)`: a rich progress bar on stderr when stderr is a terminal and `total`
    is at least PROGRESS_FROM; otherwise (a pipe, a log file, a few items) nothing is drawn."""
    if total < PROGRESS_FROM or not sys.stderr.isatty():
        yield lambda _n: None
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)
