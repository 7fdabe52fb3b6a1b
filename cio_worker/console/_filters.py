"""The dead-letter filter as the console reads, writes and shows it.

One set of fields (`kind`, `family`, `status`, `reason`, `older_than`, `newer_than`) travels in
the list's query, in the action forms' hidden fields and in the redirect after an action, so the
operator always sees the letters an action meant. Each is checked, and a bad one is a 400 naming
the field and its rule.
"""

from __future__ import annotations

from cio_worker.console._context import BadInputError, Call
from cio_worker.console._html import Html, fill, hidden, join
from cio_worker.kinds import Family, Kind
from cio_worker.queue import AGE_RULE, STATUS_RULE, LetterFilter, parse_age, parse_status

FIELDS = ("kind", "family", "status", "reason", "older_than", "newer_than")
#: Longest reason text searched for, characters.
MAX_REASON_CHARS = 200
DURATION_RULE = f"must be {AGE_RULE}"


def parse_duration(field: str, text: str) -> float | None:
    """`90s`, `30m`, `2h`, `7d`, `1w` -> seconds; empty -> None."""
    if not text:
        return None
    try:
        return parse_age(text)
    except ValueError:
        raise BadInputError(field, DURATION_RULE) from None


def read_filter(call: Call) -> tuple[LetterFilter, dict[str, str]]:
    """The filter the call's fields describe, and those fields (for links and forms)."""
    values = {name: call.get(name) for name in FIELDS}
    kind = family = status = None
    if values["kind"]:
        try:
            kind = Kind(values["kind"])
        except ValueError:
            raise BadInputError("kind", f"must be one of {', '.join(Kind)}") from None
    if values["family"]:
        try:
            family = Family(values["family"])
        except ValueError:
            raise BadInputError("family", f"must be one of {', '.join(Family)}") from None
    if values["status"]:
        try:
            status = parse_status(values["status"])
        except ValueError:
            raise BadInputError("status", f"must be {STATUS_RULE}") from None
    if len(values["reason"]) > MAX_REASON_CHARS:
        raise BadInputError("reason", f"must be at most {MAX_REASON_CHARS} characters")
    letters = LetterFilter(
        kind=kind,
        family=family,
        status=status,
        reason=values["reason"] or None,
        older_than_s=parse_duration("older_than", values["older_than"]),
        newer_than_s=parse_duration("newer_than", values["newer_than"]),
    )
    return letters, {name: value for name, value in values.items() if value}


def describe(values: dict[str, str]) -> str:
    """The filter in words: `kind send_email, reason contains "400"`, or `every dead letter`."""
    words = {
        "kind": "kind {}",
        "family": "family {}",
        "status": "last status {}",
        "reason": 'reason contains "{}"',
        "older_than": "dead for over {}",
        "newer_than": "dead for under {}",
    }
    parts = [words[name].format(value) for name, value in values.items() if value]
    return ", ".join(parts) if parts else "every dead letter"


def hidden_fields(values: dict[str, str]) -> Html:
    return join(hidden(name, value) for name, value in values.items())


def filter_form(values: dict[str, str]) -> Html:
    """The GET form above the list."""

    def select(name: str, options: list[str]) -> Html:
        chosen = values.get(name, "")
        items = [fill('<option value="">any</option>')] + [
            fill(
                '<option value="$v"$sel>$v</option>',
                v=option,
                sel=Html(" selected") if option == chosen else Html(""),
            )
            for option in options
        ]
        return fill(
            '<label>$name<select name="$name">$items</select></label>', name=name, items=join(items)
        )

    def text(name: str, label: str, placeholder: str, size: int = 12) -> Html:
        return fill(
            '<label>$label<input type="text" name="$name" value="$value" size="$size" '
            'placeholder="$placeholder"></label>',
            name=name,
            label=label,
            value=values.get(name, ""),
            size=size,
            placeholder=placeholder,
        )

    return fill(
        '<form method="get" action="/dead-letters" class="filters">$kind$family$status$reason'
        '$older$newer<button type="submit" class="primary">Filter</button>'
        '<a class="button" href="/dead-letters">Clear</a></form>',
        kind=select("kind", [kind.value for kind in Kind]),
        family=select("family", [family.value for family in Family]),
        status=text("status", "status", "400, 0 = none", 8),
        reason=text("reason", "reason contains", "text", 20),
        older=text("older_than", "dead for over", "2h"),
        newer=text("newer_than", "dead for under", "7d"),
    )
