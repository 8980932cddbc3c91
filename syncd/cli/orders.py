"""``syncd order add|track|list|show|resolve|refill|cancel``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from syncd import send_pause
from syncd.cli.commands import load, opened, read_config, start_logging
from syncd.cli.exits import EXIT_JOB_FAILED, EXIT_OK
from syncd.clock import utcnow
from syncd.display import printable
from syncd.errors import UserError
from syncd.lifecycle import judge, resolution
from syncd.models import Order, OrderState, RequestKind
from syncd.order_requests import Request, RequestState
from syncd.order_types import LIST_LONGEST, LISTS
from syncd.plans import Verdict
from syncd.provider.dialects import DIALECTS
from syncd.storage import command_reads
from syncd.storage.plain_orders import track_plainly
from syncd.storage.values import read_money, readable
from syncd.units import LARGEST, shown_money, shown_value

if TYPE_CHECKING:
    from syncd.jobs.submit import SubmitCounts
    from syncd.storage.driver import Driver


def add_parsers(commands: argparse._SubParsersAction[Any]) -> None:
    order = commands.add_parser("order", help="place, track, list and settle orders")
    actions = order.add_subparsers(dest="order_command", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="queue an order and submit it now; prints its local id")
    add.add_argument("--provider", required=True, metavar="P")
    add.add_argument("--package", required=True, type=_positive, metavar="ID")
    add.add_argument("--link", metavar="URL", help="what the order is for (not a subscription)")
    add.add_argument(
        "--quantity", type=_positive, metavar="N", help="how many (not for package types)"
    )
    add.add_argument("--comments-file", type=Path, metavar="F", help="one custom comment per line")
    add.add_argument(
        "--param",
        action="append",
        type=_param,
        default=[],
        metavar="NAME=VALUE",
        help="a field the package's type needs, by the provider's name for it: "
        "--param runs=5 --param interval=30 (see syncd packages)",
    )
    add.add_argument(
        "--param-file",
        action="append",
        type=_param_file,
        default=[],
        metavar="NAME=F",
        help="a one-per-line field read from a file: --param-file usernames=names.txt",
    )
    for name in sorted(LISTS):
        add.add_argument(
            f"--{name}-file",
            dest="param_file",
            action="append",
            type=partial(_named_file, name),
            metavar="F",
            help=f"the same as --param-file {name}=F",
        )

    track = actions.add_parser("track", help="start tracking orders placed elsewhere")
    track.add_argument("--provider", required=True, metavar="P")
    track.add_argument("ids", nargs="+", type=_positive, metavar="ID", help="provider order ids")

    listing = actions.add_parser("list", help="list orders, newest first")
    listing.add_argument("--state", choices=[s.value for s in OrderState], metavar="S")
    listing.add_argument("--provider", metavar="P")
    listing.add_argument(
        "--limit", type=int, default=50, metavar="N", help="default 50; 0 lists all"
    )
    listing.add_argument("--json", action="store_true", help="one JSON array")

    resolve = actions.add_parser("resolve", help="settle an ambiguous order")
    resolve.add_argument("id", type=_positive, metavar="ID", help="local order id")
    how = resolve.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "--provider-order", type=_positive, metavar="N", help="the provider did take it, as order N"
    )
    how.add_argument(
        "--resend", action="store_true", help="the provider never got it: queue it again"
    )
    how.add_argument("--abandon", action="store_true", help="stop caring about it")

    show = actions.add_parser("show", help="one order with its changes and its requests")
    show.add_argument("id", type=_positive, metavar="ID", help="local order id")
    show.add_argument("--json", action="store_true", help="one JSON object")

    for kind, what in (("refill", "refill finished orders"), ("cancel", "cancel orders")):
        ask = actions.add_parser(kind, help=f"ask the provider to {what}; sends now")
        ask.add_argument("ids", nargs="+", type=_positive, metavar="ID", help="local order ids")


def run(args: argparse.Namespace) -> int:
    handler = {
        "add": add, "track": track, "list": listing, "resolve": resolve, "show": show,
        "refill": ask, "cancel": ask,
    }[args.order_command]  # fmt: skip
    return handler(args)


def ask(args: argparse.Namespace) -> int:
    """Queue a refill or a cancellation of each order and send them now. Every order
    must exist and belong to a configured provider, or nothing is queued (exit 2); each
    request then gets one line: sent, done, rejected (with the reason) or ambiguous."""
    kind = RequestKind(args.order_command)
    config = load(args)
    ids = list(dict.fromkeys(args.ids))
    with opened(config) as storage:
        known = storage.order_states(ids)
        if missing := [i for i in ids if i not in known]:
            raise UserError(f"no order {', '.join(map(str, missing))}; nothing was queued or sent")
        configured = {p.name: p for p in config.providers}
        if strangers := sorted({known[i][0] for i in ids} - set(configured)):
            raise UserError(
                f"provider {', '.join(strangers)} is not in the config; nothing was queued or sent"
            )
        request_ids = storage.queue_requests(kind, ids)

        from syncd.jobs.runner import ProviderRunner  # noqa: PLC0415 - the client, to send

        async def send() -> dict[str, str]:
            failures = {}  # provider -> why its sending stopped
            for name in dict.fromkeys(known[i][0] for i in ids):
                async with ProviderRunner(configured[name], storage) as runner:
                    counts = await runner.send_requests(request_ids)
                if counts.failure is not None:
                    failures[name] = str(counts.failure)
            return failures

        import asyncio  # noqa: PLC0415 - to send: order list and show need no event loop

        failures = asyncio.run(send())
        requests = [r for i in ids for r in storage.order_requests(i) if r.id in request_ids]
    ok = True
    for r in requests:
        line = f"request {r.id}: {kind} of order {r.order_id}: {r.state}"
        if r.provider_request_id is not None:
            line += f", refill {r.provider_request_id}"
        if r.error:
            line += f" ({r.error})"
        elif r.state is RequestState.QUEUED and known[r.order_id or 0][0] in failures:
            # Left untouched: sending to its provider stopped at an earlier request.
            line += " (not sent: sending stopped at an earlier request; the orders pass sends it)"
        elif r.state is RequestState.QUEUED:
            # Left untouched: another process's call to the provider was in flight.
            line += (
                f" ({send_pause.in_flight(known[r.order_id or 0][0])}; the orders pass sends it)"
            )
        print(printable(line))
        ok = ok and r.state in (RequestState.SENT, RequestState.DONE, RequestState.QUEUED)
        ok = ok and not (r.state is RequestState.QUEUED and r.error)
    for failure in failures.values():
        print(printable(f"syncd: {failure}"), file=sys.stderr)
    return EXIT_OK if ok else EXIT_JOB_FAILED


def show(args: argparse.Namespace) -> int:
    config = load(args)
    with opened(config, register=False, migrate=False) as storage:
        order = storage.order(args.id)
        if order is None:
            raise UserError(f"there is no order {args.id}")
        changes = [_amounts_shown(c) for c in storage.order_history(args.id)]
        requests = storage.order_requests(args.id)
    params = params_shown(order.params)
    shown = {
        **order_json(order),
        "params": params,
        "changes": changes,
        "requests": [request_json(r) for r in requests],
    }
    if args.json:
        print(json.dumps(shown, indent=2))
        return EXIT_OK
    for key, value in order_json(order).items():
        print(printable(f"{key:<16} {_text(value)}"))
    if params is not None:
        print(printable(f"{'params':<16} {json.dumps(params, ensure_ascii=False)}"))
    print("changes")
    for c in changes:
        moved = [
            f"{name} {_text(c[name + '_old'])} -> {_text(c[name + '_new'])}"
            for name in ("state", "status", "charge", "remains", "start_counter", "extra")
            if c.get(name + "_old") != c.get(name + "_new")
        ]
        print(printable(f"  {c['id']:>6}  {c['changed_at']}  {', '.join(moved)}"))
    print("requests")
    for r in requests:
        line = f"  {r.id:>6}  {r.kind} {r.state}"
        if r.status is not None:
            line += f" ({r.status.value})"
        if r.provider_request_id is not None:
            line += f", provider id {r.provider_request_id}"
        if r.error:
            line += f": {r.error}"
        print(printable(line))
    return EXIT_OK


def _amounts_shown(change: dict[str, Any]) -> dict[str, Any]:
    """A change row with its charges as the order's own is shown (``shown_money``): the
    feed gives them as stored, ``0.04680`` or MariaDB's ``0.046800000000``. A value that
    does not read as an amount stays as it is."""
    for key in ("charge_old", "charge_new"):
        amount = readable(read_money, change.get(key))
        if amount is not None:
            change[key] = shown_money(amount)
    return change


def params_shown(raw: object) -> object:
    """An order's params as JSON shows them: the object when it reads as one, else the
    text as stored (which judging rejects, naming why)."""
    if isinstance(raw, bytes | bytearray | memoryview):
        raw = bytes(raw).decode("utf-8", "replace")
    if isinstance(raw, str):
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):
            return raw
    return raw if raw is None or isinstance(raw, dict | list | str | int | float) else str(raw)


def request_json(r: Request) -> dict[str, object]:
    def iso(moment: datetime | None) -> str | None:
        return moment.isoformat() if moment else None

    return {
        "id": r.id, "order_id": r.order_id, "kind": str(r.kind), "state": str(r.state),
        "provider_request_id": r.provider_request_id,
        "status": r.status.value if r.status else None, "status_raw": r.status_raw,
        "error": r.error, "created_at": iso(r.created_at), "sent_at": iso(r.sent_at),
        "checked_at": iso(r.checked_at), "finished_at": iso(r.finished_at),
    }  # fmt: skip


def add(args: argparse.Namespace) -> int:
    config = load(args)
    (provider,) = config.select(args.provider)
    comments = _read_comments(args.comments_file)
    params = _params(args.param, args.param_file)
    with opened(config) as storage:
        if not any(p.catalog_synced_at for p in storage.overview() if p.name == provider.name):
            raise UserError(
                f"the catalog of {provider.name} was never synced, so the order cannot be "
                f"validated; run: syncd sync catalog --provider {provider.name}"
            )
        now = utcnow()
        wanted = Order(
            id=0, provider=provider.name, provider_order_id=None, service_id=args.package,
            link=args.link, quantity=args.quantity, custom_data=comments,
            state=OrderState.QUEUED, status=None, status_raw=None, charge=None,
            start_counter=None, remains=None, currency=None, error=None, created_at=now,
            params=params or None,
        )  # fmt: skip
        # An order that fails validation is refused here, with no row written: the person
        # typing it fixes it now. (A row a program inserts is rejected with its reason.)
        decide = partial(judge, dialect=DIALECTS[provider.dialect])
        judged = storage.order_verdict(wanted, decide)
        if judged.verdict is Verdict.REJECT:
            raise UserError(f"order refused, nothing queued or sent: {judged.reason}")
        order_id = storage.queue_order(
            provider.name,
            service_id=args.package,
            link=args.link,
            quantity=args.quantity,
            custom_data=comments,
            now=now,
            params=params,
        )
        print(order_id)

        from syncd.jobs.runner import ProviderRunner  # noqa: PLC0415 - the client, to send

        async def submit() -> SubmitCounts:
            async with ProviderRunner(provider, storage) as runner:
                return await runner.submit(order_id)

        import asyncio  # noqa: PLC0415 - to send: order list and show need no event loop

        counts = asyncio.run(submit())
        order = storage.order(order_id)
    assert order is not None
    code, line = add_outcome(order, provider.name, in_flight=counts.in_flight > 0)
    print(printable(f"syncd: {line}"), file=sys.stderr)
    return code


def add_outcome(order: Order, provider: str, *, in_flight: bool) -> tuple[int, str]:
    """The exit status and the one line ``syncd order add`` ends with, for every outcome:
    taken, rejected, being sent by another process (the daemon claimed it first), left
    queued for the daemon (another call in flight, a send pause, funds, the price guard,
    a failed attempt), or ambiguous."""
    n, error = order.id, order.error
    match order.state:
        case OrderState.ACTIVE:
            return EXIT_OK, f"order {n} taken by {provider} as its order {order.provider_order_id}"
        case OrderState.REJECTED:
            return EXIT_JOB_FAILED, f"order {n} was rejected: {error or 'no reason given'}"
        case OrderState.SUBMITTING:
            # Claimed first by another process (the running daemon, most often).
            return EXIT_OK, (
                f"order {n} is queued; another syncd process (the running daemon) is "
                f"sending it: see syncd order show {n}"
            )
        case OrderState.AMBIGUOUS:
            return EXIT_JOB_FAILED, (
                f"order {n} is ambiguous ({error}): check the provider's panel, then "
                f"syncd order resolve {n}"
            )
        case OrderState.QUEUED if in_flight and not error:
            return EXIT_OK, (
                f"order {n} is queued: {send_pause.in_flight(provider)}; the running daemon "
                "(or the next orders pass) sends it once that call is answered"
            )
        case OrderState.QUEUED:
            why = error or "not sent"
            return EXIT_JOB_FAILED, (
                f"order {n} stays queued, not sent ({why}); the running daemon (or the next "
                "orders pass) sends it"
            )
    return EXIT_JOB_FAILED, f"order {n} is {order.state}" + (f": {error}" if error else "")


def track(args: argparse.Namespace) -> int:
    config = read_config(args)
    (provider,) = config.select(args.provider)
    if args.verbose:
        start_logging(config, args)
    # A shop's script may track thousands of ids per call, one call after another: on a
    # SQLite database that needs no migration and no registration, the driver does it
    # alone, without half a second of SQLAlchemy imports per call.
    registered = [(p.name, p.url) for p in config.providers]
    ids = track_plainly(config.database.connect_url, registered, provider.name, args.ids, utcnow())
    if ids is None:
        if not args.verbose:
            start_logging(config, args)
        with opened(config) as storage:
            ids = storage.track_orders(provider.name, args.ids, utcnow())
    name = provider.name
    print(
        "\n".join(f"{name} order {poid} -> local order {ids[poid]}" for poid in args.ids),
    )
    return EXIT_OK


# ``order list`` reads through the driver alone up to this many orders, gathered before
# anything is printed; a longer listing goes the usual way, a page at a time.
PLAIN_LONGEST = 5000


class Listed(Protocol):
    """What ``order list`` reads: ``Storage``, or ``PlainListing`` on the driver's own
    connection."""

    def orders(
        self,
        *,
        state: OrderState | None = None,
        provider: str | None = None,
        before: int | None = None,
        limit: int = 500,
    ) -> list[Order]: ...

    def requests_of(self, order_ids: Sequence[int]) -> dict[int, list[Request]]: ...


class PlainListing:
    """``order list``'s two reads on a driver's connection (``command_reads``)."""

    def __init__(self, db: Driver) -> None:
        self.db = db

    def orders(
        self,
        *,
        state: OrderState | None = None,
        provider: str | None = None,
        before: int | None = None,
        limit: int = 500,
    ) -> list[Order]:
        return command_reads.order_page(
            self.db, state=state, provider=provider, before=before, limit=limit
        )

    def requests_of(self, order_ids: Sequence[int]) -> dict[int, list[Request]]:
        return command_reads.requests_of(self.db, order_ids) if order_ids else {}


def listing(args: argparse.Namespace) -> int:
    config = read_config(args)
    if args.provider is not None:
        config.select(args.provider)
    if args.limit < 0:
        raise UserError("--limit must be 0 (all) or more")
    if args.verbose:
        start_logging(config, args)
    else:
        # As for status: without -v nothing reaches stderr before the usual way's logging.
        logging.getLogger().addHandler(logging.NullHandler())
    listed = None
    if 0 < args.limit <= PLAIN_LONGEST:
        # Read whole before printing: a driver error halfway goes the usual way, and
        # nothing is printed twice.
        listed = command_reads.read_plainly(
            config.database.connect_url,
            lambda db: list(_with_requests(PlainListing(db), _pages(PlainListing(db), args))),
        )
    if listed is not None:
        _print_listing(listed, as_json=args.json)
        return EXIT_OK
    if not args.verbose:
        start_logging(config, args)
    with opened(config, register=False, migrate=False) as storage:
        _print_listing(_with_requests(storage, _pages(storage, args)), as_json=args.json)
    return EXIT_OK


def _print_listing(listed: Iterable[tuple[Order, list[Request]]], *, as_json: bool) -> None:
    if as_json:
        print("[", end="")
        for n, (order, asked) in enumerate(listed):
            shown = order_json(order) | {"requests": [request_json(r) for r in asked]}
            print(("," if n else "") + "\n  " + json.dumps(shown), end="")
        print("\n]")
        return
    print(
        f"{'id':>7} {'provider':<12} {'prov.order':>10} {'service':>7} {'qty':>7} "
        f"{'state':<10} {'status':<12} {'charge':>10} {'remains':>7}  "
        f"{'created':<16}  error"
    )
    for o, asked in listed:
        created = f"{o.created_at:%Y-%m-%d %H:%M}" if o.created_at else "-"
        row = (
            f"{o.id:>7} {o.provider:<12} {_text(o.provider_order_id):>10} "
            f"{_text(o.service_id):>7} {_text(o.quantity):>7} {o.state!s:<10} "
            f"{_text(o.status):<12} {_text(o.charge):>10} {_text(o.remains):>7}  "
            f"{created:<16}  {_cut(o.error or '')}"
        )
        if asked:  # the latest request of each kind, e.g. "refill sent (Pending)"
            latest = {r.kind: r for r in asked}.values()
            row = row.rstrip() + "  [" + "; ".join(map(_request_text, latest)) + "]"
        print(printable(row.rstrip()))


def resolve(args: argparse.Namespace) -> int:
    config = load(args)
    with opened(config, register=False) as storage:
        order = storage.order(args.id)
        if order is None:
            raise UserError(f"there is no order {args.id}")
        if order.state is not OrderState.AMBIGUOUS:
            raise UserError(f"order {args.id} is {order.state}; only ambiguous orders are resolved")
        action = "provider-order" if args.provider_order else "resend" if args.resend else "abandon"
        if args.provider_order is not None:
            taken = storage.order_at_provider(order.provider, args.provider_order)
            if taken is not None and taken.id != order.id:
                raise UserError(
                    f"{order.provider} order {args.provider_order} is already local order "
                    f"{taken.id}; if both are the same order, abandon this one"
                )
        values = resolution(action, args.provider_order, utcnow())
        if not storage.settle_order(args.id, OrderState.AMBIGUOUS, values, utcnow()):
            raise UserError(f"order {args.id} changed meanwhile; look again with syncd order list")
    outcome = {
        "provider-order": f"active as {order.provider} order {args.provider_order}; tracking it",
        "resend": "queued again; the next orders job sends it",
        "abandon": "abandoned",
    }[action]
    print(f"order {args.id}: {outcome}")
    return EXIT_OK


def order_json(o: Order) -> dict[str, object]:
    return {
        "id": o.id,
        "provider": o.provider,
        "provider_order_id": o.provider_order_id,
        "service_id": o.service_id,
        "link": o.link,
        "quantity": o.quantity,
        "state": str(o.state),
        "status": o.status.value if o.status else None,
        "status_raw": o.status_raw,
        "charge": shown_money(o.charge) if o.charge is not None else None,
        "start_counter": o.start_counter,
        "remains": o.remains,
        "currency": o.currency,
        "status_extra": o.status_extra,
        "error": o.error,
        "created_at": o.created_at.isoformat() if o.created_at else None,
        "submitted_at": o.submitted_at.isoformat() if o.submitted_at else None,
        "checked_at": o.checked_at.isoformat() if o.checked_at else None,
        "finished_at": o.finished_at.isoformat() if o.finished_at else None,
    }


def _with_requests(
    storage: Listed, orders: Iterator[Order]
) -> Iterator[tuple[Order, list[Request]]]:
    """Each order with its refill and cancel requests, looked up a page at a time."""
    page: list[Order] = []
    for order in orders:
        page.append(order)
        if len(page) == 500:
            yield from _paired(storage, page)
            page = []
    yield from _paired(storage, page)


def _paired(storage: Listed, page: list[Order]) -> Iterator[tuple[Order, list[Request]]]:
    asked = storage.requests_of([o.id for o in page])
    for order in page:
        yield order, asked.get(order.id, [])


def _request_text(r: Request) -> str:
    status = f" ({r.status.value})" if r.status is not None else ""
    return f"{r.kind} {r.state}{status}"


def _pages(storage: Listed, args: argparse.Namespace) -> Iterator[Order]:
    """Orders a page at a time, so listing 100,000 of them needs no more memory than 500."""
    state = OrderState(args.state) if args.state else None
    left = args.limit or None
    before = None
    while left is None or left > 0:
        page = storage.orders(
            state=state, provider=args.provider, before=before, limit=min(500, left or 500)
        )
        if not page:
            return
        yield from page
        before = page[-1].id
        if left is not None:
            left -= len(page)


def _read_comments(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        with path.open("rb") as comments:
            data = comments.read(COMMENTS_LIMIT + 1)  # /dev/zero must not fill the memory
    except OSError as exc:
        raise UserError(f"cannot read --comments-file {path}: {exc.strerror}") from None
    if len(data) > COMMENTS_LIMIT:
        raise UserError(f"--comments-file {path} is longer than {COMMENTS_LIMIT // 2**20} MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"--comments-file {path} is not UTF-8 text") from None


COMMENTS_LIMIT = 2**20  # bytes of custom comments: far more than any panel takes


def _param(text: str) -> tuple[str, str]:
    """``--param NAME=VALUE``: the value is sent as text (``order_types`` reads numbers
    from digits)."""
    name, equals, value = text.partition("=")
    name = name.strip()
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"not NAME=VALUE: {text!r}")
    return name, value


def _param_file(text: str) -> tuple[str, str]:
    """``--param-file NAME=F``: the field read from a file, one entry per line."""
    name, path = _param(text)
    return _named_file(name, path)


def _named_file(name: str, path: str) -> tuple[str, str]:
    try:
        with Path(path).open("rb") as source:
            data = source.read(LIST_LONGEST + 1)  # /dev/zero must not fill the memory
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > LIST_LONGEST:
        raise argparse.ArgumentTypeError(f"{path} is longer than {LIST_LONGEST // 2**20} MiB")
    try:
        return name, data.decode("utf-8")
    except UnicodeDecodeError:
        raise argparse.ArgumentTypeError(f"{path} is not UTF-8 text") from None


def _params(*given: list[tuple[str, str]]) -> dict[str, object]:
    """The params of ``--param`` and the file options, each name once."""
    params: dict[str, object] = {}
    for name, value in (pair for pairs in given for pair in pairs):
        if name in params:
            raise UserError(f"--param {name} is given twice; nothing was queued or sent")
        params[name] = value
    return params


def _positive(text: str) -> int:
    # ASCII digits only: int() reads Arabic-Indic digits too, which nobody typing an id means.
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    value = int(text)
    if not 0 < value <= LARGEST:
        raise argparse.ArgumentTypeError(f"must be between 1 and {LARGEST}: {text}")
    return value


def _cut(text: str, width: int = 80) -> str:
    """A long error shown in the table cut to ``width``; ``--json`` has all of it."""
    return text if len(text) <= width else text[: width - 1] + "…"


def _text(value: object) -> str:
    if isinstance(value, dict | list):  # status_extra and its changes: as JSON
        return json.dumps(value, ensure_ascii=False)
    return "-" if value is None else shown_value(value)
