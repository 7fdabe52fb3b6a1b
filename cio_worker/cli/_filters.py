"""The dead-letter filter options shared by `dlq list`, `dlq replay` and `dlq purge`, and the
argparse types of `cio-worker`'s options (durations, HTTP statuses, limits).

`add_filter_options` declares them once and `letter_filter` turns them into the one
`queue.LetterFilter`, so the three commands always mean the same letters. Each option is checked
by argparse: a bad value is a usage error naming the option and the rule.
"""

from __future__ import annotations

import argparse

from cio_worker.kinds import Family, Kind
from cio_worker.queue import LetterFilter, parse_age, parse_status

#: The attributes `add_filter_options` sets, in the order of LetterFilter's fields.
FILTER_OPTIONS = ("kind", "family", "status", "reason", "older_than", "newer_than")


def duration(text: str) -> float:
    """`30m` -> 1800.0 seconds; argparse reports the rule when the text breaks it."""
    try:
        return parse_age(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def http_status(text: str) -> int:
    """An HTTP status (100-599), or 0 for failures that got no answer."""
    try:
        return parse_status(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def positive(text: str) -> int:
    """A whole number of at least 1 (a `--limit`)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return value


def add_filter_options(parser: argparse.ArgumentParser) -> None:
    """--kind, --family, --status, --reason, --older-than, --newer-than."""
    group = parser.add_argument_group("filters (all given must match)")
    kinds = [kind.value for kind in Kind]
    group.add_argument(
        "--kind",
        choices=kinds,
        metavar="KIND",
        help=f"only jobs of this kind: {', '.join(kinds)}",
    )
    families = [family.value for family in Family]
    group.add_argument(
        "--family",
        choices=families,
        metavar="FAMILY",
        help=f"only jobs of this queue family: {', '.join(families)}",
    )
    group.add_argument(
        "--status",
        type=http_status,
        metavar="HTTP",
        help="only letters whose last failure had this HTTP status (0: no answer at all)",
    )
    group.add_argument(
        "--reason", metavar="TEXT", help="only letters whose reason contains TEXT (any case)"
    )
    group.add_argument(
        "--older-than",
        type=duration,
        metavar="DURATION",
        help="only letters dead for longer than this (90s, 30m, 2h, 7d, 1w)",
    )
    group.add_argument(
        "--newer-than",
        type=duration,
        metavar="DURATION",
        help="only letters dead for less than this (90s, 30m, 2h, 7d, 1w)",
    )


def letter_filter(args: argparse.Namespace) -> LetterFilter:
    """The LetterFilter the options on the command line describe."""
    return LetterFilter(
        kind=Kind(args.kind) if args.kind else None,
        family=Family(args.family) if args.family else None,
        status=args.status,
        reason=args.reason,
        older_than_s=args.older_than,
        newer_than_s=args.newer_than,
    )


def has_filter(args: argparse.Namespace) -> bool:
    """Whether any filter option was given."""
    return any(getattr(args, name) is not None for name in FILTER_OPTIONS)
