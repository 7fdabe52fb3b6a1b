"""`cio-worker dlq list|show|replay|purge`: the dead-letter queue for operators.

`list`, `replay` and `purge` take the same filters (cli/_filters.py), so what `dlq list --kind
send_email --status 400` shows is exactly what `dlq replay --kind send_email --status 400`
replays. `replay` and `purge` change letters named by id, by filter, or `--all`; `--dry-run`
says what would change and changes nothing. More than one letter to change needs a yes: asked
on a terminal, `--yes` in scripts (without a terminal they refuse, unless one id was named).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from cio_worker.cli._failures import FAILED, USAGE, UsageError
from cio_worker.cli._filters import add_filter_options, has_filter, letter_filter, positive
from cio_worker.cli._output import (
    add_json_flag,
    load_settings,
    note,
    print_json,
    print_table,
    progress_bar,
    when,
)
from cio_worker.config import Settings
from cio_worker.queue import DeadLetterStore

#: Rows `dlq list` shows unless told `--limit N` or `--all`.
DEFAULT_LIMIT = 100

#: Letters purged per Redis call (and per step of the progress bar).
PURGE_CHUNK = 500

#: (verb, past tense, progress) of each changing action.
VERBS = {"replay": ("replay", "replayed", "replaying"), "purge": ("purge", "purged", "purging")}


def register(sub: Any) -> None:  # argparse's _SubParsersAction is private
    """Add `dlq` and its actions to `cio-worker`."""
    dlq = sub.add_parser(
        "dlq",
        help="list, inspect, replay and purge dead letters (jobs Customer.io refused)",
        description="Dead letters are jobs that could not be delivered: refused by Customer.io "
        "(a 4xx), or out of attempts. Fix the cause, then replay them (same job id, attempts "
        "reset) or purge them.",
    )
    actions = dlq.add_subparsers(
        dest="dlq_command", required=True, metavar="ACTION", title="actions"
    )
    listing = actions.add_parser(
        "list",
        help="dead letters matching the filters, oldest first (ids, reasons; no payloads)",
        description="Dead letters matching the filters, oldest first. Payloads are not shown "
        "(they hold personal data): `dlq show ID` has them.",
    )
    add_filter_options(listing)
    size = listing.add_mutually_exclusive_group()
    size.add_argument(
        "--limit", type=positive, default=DEFAULT_LIMIT, metavar="N", help="show at most N letters"
    )
    size.add_argument("--all", action="store_true", help="show every matching letter")
    add_json_flag(listing)

    show = actions.add_parser(
        "show",
        help="one dead letter: payload and error history (JSON)",
        description="One dead letter as JSON: its summary, the payload and the first and last "
        "error.",
    )
    show.add_argument("id", help="the job id, as `dlq list` prints it")
    add_json_flag(show)  # accepted for symmetry: `show` always prints JSON

    for name, purpose in (
        ("replay", "put dead letters back in their queue (same job id, attempts reset)"),
        ("purge", "delete dead letters for good"),
    ):
        action = actions.add_parser(
            name,
            help=purpose,
            description=f"{purpose[0].upper()}{purpose[1:]}: the ids named, every letter the "
            "filters match, or --all. Asks before changing more than one letter.",
        )
        action.add_argument("ids", nargs="*", metavar="ID", help="job ids, as `dlq list` prints")
        action.add_argument(
            "--all", action="store_true", help="every dead letter (with filters: every match)"
        )
        add_filter_options(action)
        action.add_argument(
            "--dry-run",
            action="store_true",
            help="say how many letters would change (which ids with --json); change nothing",
        )
        action.add_argument(
            "-y",
            "--yes",
            action="store_true",
            help="do not ask; needed without a terminal unless exactly one id is named",
        )
        add_json_flag(action)
    dlq.set_defaults(handler=run)


def run(args: argparse.Namespace, _: list[str]) -> int:
    settings = load_settings()
    from cio_worker.connection import get_redis

    store = DeadLetterStore(get_redis(settings), retention_days=settings.dlq_retention_days)
    if args.dlq_command == "list":
        return _list(args, store)
    if args.dlq_command == "show":
        return _show(args, store)
    return _change(args, store, settings)


def _list(args: argparse.Namespace, store: DeadLetterStore) -> int:
    letters = letter_filter(args)
    limit = None if args.all else args.limit
    shown = [letter.summary() for letter in store.select(letters, limit=limit)]
    if args.json:
        print_json(shown, sort_keys=False)
    else:
        columns = ["id", "kind", "attempts", "status", "reason", "last_failed_at"]
        print_table(columns, ([_cell(letter, column) for column in columns] for letter in shown))
    if limit is not None and len(shown) == limit:
        more = store.count_matching(letters) - len(shown)
        if more > 0:
            note(f"… {more} more; --all or --limit N to see them")
    return 0


def _cell(letter: dict[str, Any], column: str) -> Any:
    value = letter.get(column)
    # Times are Unix seconds; anything else an old entry may hold is shown as it is.
    if column.endswith("_at") and isinstance(value, int | float):
        return when(value)
    return value


def _show(args: argparse.Namespace, store: DeadLetterStore) -> int:
    letter = store.get(args.id)
    if letter is None:
        note(f"cio-worker: dlq show: no dead letter with id {args.id!r}")
        return FAILED
    print_json(letter.detail(), sort_keys=False)
    return 0


def _change(args: argparse.Namespace, store: DeadLetterStore, settings: Settings) -> int:
    """`replay` or `purge`: select, report what is missing, confirm, act with progress, report."""
    command = args.dlq_command
    verb, done_verb, doing = VERBS[command]
    targets, missing = _targets(args, store)
    if missing:
        listed = ", ".join(repr(job_id) for job_id in missing)
        note(f"cio-worker: dlq {command}: no dead letter with id {listed}")
    if args.dry_run or not targets:
        if args.json or targets or not missing:  # "no dead letter with id X" said it all
            _report(args, f"would {verb}" if args.dry_run else done_verb, targets, missing)
        return FAILED if missing else 0
    refusal = _refusal(args, verb, len(targets))
    if refusal is not None:
        return refusal
    with progress_bar(len(targets), doing) as advance:
        if command == "replay":
            changed = store.replay(targets, settings=settings, progress=advance)
            count = len(changed)
        else:  # purge says how many existed, not which: report the selected ids
            changed, count = targets, _purge(store, targets, advance)
    _report(args, done_verb, changed, missing, count=count)
    return FAILED if missing or count < len(targets) else 0


def _report(
    args: argparse.Namespace,
    what: str,
    ids: list[str],
    missing: list[str],
    *,
    count: int | None = None,
) -> None:
    """`replayed 3 dead letters`, or with --json one document: action, dry_run, count, the ids
    changed (or that would be) and the named ids that are not dead letters."""
    count = len(ids) if count is None else count
    if args.json:
        document = {
            "action": args.dlq_command,
            "dry_run": args.dry_run,
            "count": count,
            "ids": ids,
            "missing": missing,
        }
        print_json(document, sort_keys=False)
    else:
        print(f"{what} {_letters(count)}")


def _targets(args: argparse.Namespace, store: DeadLetterStore) -> tuple[list[str], list[str]]:
    """(ids that will change, named ids that are not dead letters)."""
    if args.ids and (args.all or has_filter(args)):
        raise UsageError("give job ids, or filters / --all, not both")
    if args.ids:
        named = list(dict.fromkeys(args.ids))  # in order, each once
        found = {job_id: store.get(job_id) is not None for job_id in named}
        return [i for i in named if found[i]], [i for i in named if not found[i]]
    if not (args.all or has_filter(args)):
        raise UsageError(
            "say which letters: job ids, filters (--kind, --family, --status, --reason, "
            "--older-than, --newer-than) or --all"
        )
    return store.matching_ids(letter_filter(args)), []


def _refusal(args: argparse.Namespace, verb: str, count: int) -> int | None:
    """None to go ahead; else the exit code after asking (declined) or refusing (no terminal)."""
    if args.yes:
        return None
    letters = _letters(count)
    if sys.stdin.isatty() and sys.stderr.isatty():
        if count == 1:
            return None
        print(f"{verb.capitalize()} {letters}? [y/N] ", end="", file=sys.stderr, flush=True)
        if sys.stdin.readline().strip().lower() in ("y", "yes"):
            return None
        note("nothing changed")
        return FAILED
    if len(args.ids) == 1:
        return None
    note(
        f"cio-worker: dlq {args.dlq_command}: would {verb} {letters}; "
        "add --yes to go ahead (or --dry-run --json to see which)"
    )
    return USAGE


def _letters(count: int) -> str:
    return f"{count} dead letter{'' if count == 1 else 's'}"


def _purge(store: DeadLetterStore, ids: list[str], advance: Callable[[int], None]) -> int:
    """Purge in chunks (one Redis call each, one step of the progress bar); how many existed."""
    purged = 0
    for start in range(0, len(ids), PURGE_CHUNK):
        chunk = ids[start : start + PURGE_CHUNK]
        purged += store.purge(chunk)
        advance(len(chunk))
    return purged
