"""App API reads and reporting webhooks on the command line.

`cio-worker people search|get`, `segments`, `campaigns`, `campaign-metrics ID`: tables by default;
with `--json`, one JSON document on stdout and nothing else (logs go to stderr).
`cio-worker webhooks serve [--host --port]` runs the receiver; `webhooks list [--json]` shows what
it stored. Reads go through the shared limiter like the workers' requests (app_api/_client.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from cio_worker.cli._filters import positive
from cio_worker.cli._output import add_json_flag, load_settings, print_json, print_table, when
from cio_worker.config import Settings
from cio_worker.errors import ValidationError

if TYPE_CHECKING:
    from cio_worker.app_api import AppClient
    from cio_worker.webhooks import WebhookStore

T = TypeVar("T")

#: Periods of a campaign's metrics shown in the table (the newest); --json has all of them.
TABLE_PERIODS = 7


def register(sub: Any) -> None:  # argparse's _SubParsersAction is private
    """Add `people`, `segments`, `campaigns`, `campaign-metrics` and `webhooks` to `cio-worker`."""
    people = sub.add_parser(
        "people",
        help="search people or show one person (Customer.io App API)",
        description="Read people from Customer.io's App API, through the same rate limit as "
        "the workers (CUSTOMERIO_APP_API_KEY).",
    )
    people_sub = people.add_subparsers(
        dest="people_command", required=True, metavar="ACTION", title="actions"
    )
    search = people_sub.add_parser(
        "search",
        help="people matching an email or an audience filter",
        description="People matching an email or an audience filter, every page followed.",
    )
    search.add_argument("--email", help="people whose email attribute equals this")
    search.add_argument("--filter", help='audience filter as JSON, e.g. \'{"segment": {"id": 3}}\'')
    search.add_argument("--page-size", type=int, default=1000, help="people per request (1-1000)")
    add_json_flag(search)
    get = people_sub.add_parser(
        "get",
        help="one person's attributes and devices",
        description="One person's attributes (with when each was set) and devices.",
    )
    get.add_argument("id", help="the person's id (or email / cio_id with --id-type)")
    get.add_argument(
        "--id-type", choices=("id", "email", "cio_id"), default="id", help="what ID is"
    )
    add_json_flag(get)
    people.set_defaults(handler=_people, customerio_api="app")

    segments = sub.add_parser(
        "segments",
        help="list segments (Customer.io App API)",
        description="Every segment of the workspace: id, name, type, state, tags.",
    )
    add_json_flag(segments)
    segments.set_defaults(handler=_segments, customerio_api="app")

    campaigns = sub.add_parser(
        "campaigns",
        help="list campaigns (Customer.io App API)",
        description="Every campaign of the workspace: id, name, state, tags.",
    )
    add_json_flag(campaigns)
    campaigns.set_defaults(handler=_campaigns, customerio_api="app")

    metrics = sub.add_parser(
        "campaign-metrics",
        help="a campaign's metrics per period (Customer.io App API)",
        description=f"A campaign's metrics (sent, delivered, opened, ...) per period; the table "
        f"shows the newest {TABLE_PERIODS} periods, --json all of them.",
    )
    metrics.add_argument("id", type=int, help="campaign id")
    metrics.add_argument(
        "--res", choices=("hours", "days", "weeks", "months"), default="days", help="period"
    )
    metrics.add_argument("--start", type=int, help="first period, Unix seconds")
    metrics.add_argument("--end", type=int, help="last period, Unix seconds")
    metrics.add_argument("--tz", help="time zone, e.g. America/New_York (Customer.io: EST)")
    add_json_flag(metrics)
    metrics.set_defaults(handler=_campaign_metrics, customerio_api="app")

    webhooks = sub.add_parser(
        "webhooks",
        help="receive Customer.io reporting webhooks, and list what was received",
        description="Customer.io's reporting webhooks (delivered, opened, bounced, ...): a "
        "receiver that verifies their signature (CUSTOMERIO_WEBHOOK_SIGNING_KEY) and stores "
        "them in Redis, and a listing of what it stored.",
    )
    webhooks_sub = webhooks.add_subparsers(
        dest="webhooks_command", required=True, metavar="ACTION", title="actions"
    )
    serve = webhooks_sub.add_parser(
        "serve",
        help="receive webhooks (POST /) into Redis",
        description="Receive reporting webhooks on POST / and store each event once in Redis "
        "(GET /healthz for probes). Redis must answer at start.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8788, help="port to listen on")
    listing = webhooks_sub.add_parser(
        "list",
        help="the newest stored webhook events (no personal data) and the counters",
        description="The newest stored events (ids, metric, delivery id; no bodies) and the "
        "receiver's counters.",
    )
    listing.add_argument("--limit", type=positive, default=50, help="show at most this many events")
    listing.add_argument("--metric", help="only this metric (bounced, spammed, ...)")
    add_json_flag(listing)
    webhooks.set_defaults(handler=_webhooks)


def _as_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


def _people(args: argparse.Namespace, _: list[str]) -> int:
    from cio_worker.app_api import AppClient

    with AppClient(load_settings()) as app:
        if args.people_command == "search":
            found = app.search_people(
                _filter_arg(args.filter), email=args.email, page_size=args.page_size
            )
            if args.json:
                print_json([_as_json(person) for person in found])
            else:
                print_table(["id", "email", "cio_id"], ([p.id, p.email, p.cio_id] for p in found))
                print(f"{len(found)} people")
            return 0
        person = app.get_person(args.id, id_type=args.id_type)
    if person is None:
        return _not_found(args, f"person with {args.id_type} {args.id!r}")
    if args.json:
        print_json(_as_json(person))
        return 0
    print(f"id {person.id}  email {person.email}  cio_id {person.cio_id}")
    print(f"unsubscribed: {'yes' if person.unsubscribed else 'no'}")
    rows = (
        [name, value, when(person.timestamps.get(name))]
        for name, value in sorted(person.attributes.items())
    )
    print_table(["attribute", "value", "set at"], rows)
    if person.devices:
        devices = ([d.id, d.platform, when(d.last_used)] for d in person.devices)
        print_table(["device", "platform", "last used"], devices)
    return 0


def _not_found(args: argparse.Namespace, what: str) -> int:
    """Exit 1 naming what is missing; with `--json`, stdout still gets its one document (null)."""
    print(f"cio-worker: no {what}", file=sys.stderr)
    if args.json:
        print_json(None)
    return 1


def _filter_arg(raw: str | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise ValidationError("--filter", f"must be JSON ({exc})") from None
    if not isinstance(value, dict):
        raise ValidationError("--filter", "must be a JSON object")
    return value


def _segments(args: argparse.Namespace, _: list[str]) -> int:
    return _listing(
        args,
        lambda app: app.list_segments(),
        ["id", "name", "type", "state", "tags", "updated"],
        lambda s: [s.id, s.name, s.type, s.state, ", ".join(s.tags), when(s.updated_at)],
    )


def _campaigns(args: argparse.Namespace, _: list[str]) -> int:
    return _listing(
        args,
        lambda app: app.list_campaigns(),
        ["id", "name", "state", "active", "tags", "updated"],
        lambda c: [c.id, c.name, c.state, c.active, ", ".join(c.tags), when(c.updated)],
    )


def _listing(
    args: argparse.Namespace,
    fetch: Callable[[AppClient], Sequence[T]],
    columns: Sequence[str],
    row: Callable[[T], Sequence[Any]],
) -> int:
    """An App API list command: the records as JSON with `--json`, else one table row each."""
    from cio_worker.app_api import AppClient

    with AppClient(load_settings()) as app:
        items = fetch(app)
    if args.json:
        print_json([_as_json(item) for item in items])
    else:
        print_table(columns, (row(item) for item in items))
    return 0


def _campaign_metrics(args: argparse.Namespace, _: list[str]) -> int:
    from cio_worker.app_api import AppClient

    with AppClient(load_settings()) as app:
        metrics = app.get_campaign_metrics(
            args.id, res=args.res, start=args.start, end=args.end, tz=args.tz
        )
    if metrics is None:
        return _not_found(args, f"campaign {args.id}")
    if args.json:
        print_json({**_as_json(metrics), "totals": metrics.totals})
        return 0
    periods = max((len(counts) for counts in metrics.series.values()), default=0)
    shown = min(periods, TABLE_PERIODS)
    print(f"campaign {metrics.campaign_id}: {periods} {metrics.res}, oldest first")
    print_table(
        ["metric", "total", f"last {shown} {metrics.res}"],
        (
            [name, metrics.totals[name], " ".join(str(n) for n in counts[-shown:])]
            for name, counts in sorted(metrics.series.items())
        ),
    )
    return 0


def _webhooks(args: argparse.Namespace, _: list[str]) -> int:
    from cio_worker.connection import get_redis
    from cio_worker.webhooks import WebhookStore

    settings = load_settings()
    store = WebhookStore(get_redis(settings))
    if args.webhooks_command == "serve":
        return _serve_webhooks(args, settings, store)
    return _list_webhooks(args, store)


def _serve_webhooks(args: argparse.Namespace, settings: Settings, store: WebhookStore) -> int:
    from cio_worker.webhooks import serve_webhooks, signing_key

    # Checked before the banner, so a missing key or an absent Redis is the only thing printed.
    # Once serving, a Redis outage is answered 503 (Customer.io retries) and /healthz says so.
    signing_key(settings)
    store.ping()
    print(f"webhook receiver listening on http://{args.host}:{args.port}/", flush=True)
    serve_webhooks(settings, host=args.host, port=args.port)
    return 0


def _list_webhooks(args: argparse.Namespace, store: WebhookStore) -> int:
    events = [event.summary() for event in store.recent(args.limit, metric=args.metric)]
    if args.json:
        print_json(events)
        return 0
    print_table(
        ["received", "event_id", "object_type", "metric", "delivery_id"],
        (
            [
                when(e["received_at"]),
                e["event_id"],
                e["object_type"],
                e["metric"],
                e["delivery_id"],
            ]
            for e in events
        ),
    )
    counts = store.counts()
    print("  ".join(f"{name} {value}" for name, value in counts.items()) or "no webhooks yet")
    return 0
