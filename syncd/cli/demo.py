"""``syncd demo``: the real jobs against the built-in simulator, narrated.

No config and nothing outside a temporary directory: the simulator listens on a random
loopback port, the database is a temporary SQLite file, and the run ends by itself in a
few seconds (``--forever`` keeps syncing until Ctrl-C).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import secrets
import signal
import tempfile
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from syncd import logs
from syncd.cli.exits import EXIT_OK
from syncd.cli.render import overview_text
from syncd.config import Config, DatabaseConfig, LoggingConfig, ProviderConfig, WebhookConfig
from syncd.display import printable
from syncd.jobs.runner import JobResult, run_pass
from syncd.models import ChangeKind, OrderState, RequestKind
from syncd.secret import Secret
from syncd.simulator import Fault, SimPackage, SimulatedProvider, SimulatorServer
from syncd.simulator.receiver import WebhookReceiver
from syncd.storage import Storage, open_storage

PROVIDER = "demo"


def demo(args: argparse.Namespace) -> int:
    logs.configure(level="info" if args.verbose else "critical")
    # SIGTERM ends the demo like Ctrl-C does: the temporary directory is removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    simulated = SimulatedProvider(
        dialect="key",  # the classic dialect: it offers refills and cancellations
        token="demo-token",  # noqa: S106 (the simulator's own)
        balance=Decimal("42.50"),
        order_duration=4.0,  # orders go Pending -> In progress -> final in a few seconds
        refill_duration=3.0,
        minute=1.0,  # a drip-feed's interval and a subscription's delay: minutes as seconds
        post_interval=1.5,  # a subscribed account posts every 1.5 s
    )
    secret = Secret("whsec_" + base64.b64encode(secrets.token_bytes(24)).decode())
    with (
        SimulatorServer(simulated) as server,
        WebhookReceiver(secret) as receiver,
        tempfile.TemporaryDirectory(prefix="syncd-demo-") as tmp,
    ):
        config = _config(server.url, simulated.token, Path(tmp) / "syncd.db", receiver.url, secret)
        storage = open_storage(config.database.connect_url, migrate=True)  # a new file
        storage.set_webhooks((w.name, w.events) for w in config.webhooks)
        try:
            asyncio.run(_tour(config, storage, simulated, receiver, forever=args.forever))
        finally:
            storage.close()
    return EXIT_OK


def _config(url: str, token: str, database: Path, webhook_url: str, secret: Secret) -> Config:
    provider = ProviderConfig(
        name=PROVIDER,
        url=url,
        token=Secret(token),
        dialect="key",
        timeout=timedelta(seconds=5),
        orders_interval=timedelta(seconds=1),  # the simulator's orders finish in seconds
        low_balance=Decimal("45.00"),  # the simulator starts at 42.50: an alert right away
    )
    return Config(
        source="(demo)",
        database=DatabaseConfig(f"sqlite:///{database}"),
        logging=LoggingConfig(),
        providers=(provider,),
        webhooks=(WebhookConfig("demo-receiver", webhook_url, "json", secret),),
    )


async def _tour(
    config: Config,
    storage: Storage,
    sim: SimulatedProvider,
    receiver: WebhookReceiver,
    *,
    forever: bool,
) -> None:
    tour = _Tour(config, storage, sim, _Narrator(storage, receiver))
    tour.say.step(
        f"simulated provider on {config.providers[0].url}; database {config.database.url}"
    )
    print(f"    a webhook receiver listens on {receiver.url}; low_balance is 45.00")
    await tour.catalog()
    await tour.orders()
    await tour.order_types()
    await tour.requests()
    await tour.faults()
    tour.say.step("status")
    print(overview_text(storage.overview(), storage.webhook_backlog()))
    if forever:
        await tour.forever()


class _Tour:
    def __init__(
        self, config: Config, storage: Storage, sim: SimulatedProvider, say: _Narrator
    ) -> None:
        self.config, self.storage, self.sim, self.say = config, storage, sim, say

    async def sync(self, *jobs: str) -> None:
        """One pass of the real jobs; results, then the alerts the receiver got."""
        self.say.results(await run_pass(self.config, self.storage, jobs))
        self.say.received()

    async def catalog(self) -> None:
        self.say.step("first sync: the whole catalog arrives, the balance is recorded (and is low)")
        await self.sync("catalog", "balance", "alerts")
        self.say.changes(summary_only=True)

        self.say.step("the provider reprices two services, drops one and launches one")
        self.sim.set_rate(100, Decimal("0.95"))
        self.sim.set_rate(103, Decimal("1.60"))
        self.sim.remove_package(107)
        self.sim.add_package(
            SimPackage(500, "Threads Followers [Launch] #500", "Default", "Threads Followers",
                       Decimal("0.80"), 50, 20000)
        )  # fmt: skip
        await self.sync("catalog", "alerts")
        self.say.changes()

    async def orders(self) -> None:
        self.say.step("orders: three placed through syncd, one inserted by a consumer, one invalid")
        now = datetime.now(UTC)
        for service, quantity, link in (
            (100, 500, "https://instagram.com/p/demo1"),
            (101, 1000, "https://instagram.com/p/demo2"),
            (103, 200, "https://youtube.com/watch?v=demo3"),
            (104, 20, "https://tiktok.com/@demo"),  # below the minimum: rejected
        ):
            self.storage.queue_order(PROVIDER, service_id=service, link=link, quantity=quantity,
                                     custom_data=None, now=now)  # fmt: skip
        with self.storage.engine.begin() as conn:  # what a consumer program does
            conn.exec_driver_sql(
                "INSERT INTO orders (provider, service_id, link, quantity) "
                "VALUES ('demo', 105, 'https://t.me/demo', 300)"
            )
        await self.sync("orders", "alerts")
        self.say.orders()

        self.say.step("tracking them with batched status calls until the provider finishes them")
        for _ in range(30):
            await asyncio.sleep(1)
            await run_pass(self.config, self.storage, ("orders",))
            self.say.orders(brief=True)
            if not self.storage.orders(state=OrderState.ACTIVE, limit=1):
                break
        self.say.orders()

    async def order_types(self) -> None:
        self.say.step("order types: a drip-feed in 3 runs, a subscription to an account's posts")
        drip, subscription = (
            next(p.service for p in self.sim.packages.values()
                 if p.type == ptype and p.dripfeed == dripfeed)
            for ptype, dripfeed in (("Default", True), ("Subscriptions", False))
        )  # fmt: skip
        with self.storage.engine.begin() as conn:  # a consumer writes the provider's fields
            for service, link, quantity, params in (
                (drip, "https://instagram.com/p/drip", 100, {"runs": 3, "interval": 1}),
                (subscription, None, None, {"username": "demo_shop", "min": 50, "max": 100,
                                            "posts": 3, "old_posts": 1}),
            ):  # fmt: skip
                conn.exec_driver_sql(
                    "INSERT INTO orders (provider, service_id, link, quantity, params)"
                    " VALUES ('demo', ?, ?, ?, ?)",
                    (service, link, quantity, json.dumps(params)),
                )
            ids = [row[0] for row in conn.exec_driver_sql(
                "SELECT id FROM orders ORDER BY id DESC LIMIT 2").fetchall()][::-1]  # fmt: skip
        await self.sync("orders", "alerts")
        for _ in range(8):  # the drip-feed's last run ends after about 6 s
            for order_id in ids:
                self.say.typed(order_id)
            if all(o is None or o.state is not OrderState.ACTIVE
                   for o in map(self.storage.order, ids)):  # fmt: skip
                break
            await asyncio.sleep(1)
            await run_pass(self.config, self.storage, ("orders",))

    async def requests(self) -> None:
        self.say.step("a price guard: an order with max_rate 0.50 for a package at 0.95 is held")
        now = datetime.now(UTC)
        held = self.storage.queue_order(
            PROVIDER, service_id=100, link="https://instagram.com/p/held", quantity=100,
            custom_data=None, now=now,
        )  # fmt: skip
        with self.storage.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE orders SET max_rate = '0.50' WHERE id = ?", (held,))
        await self.sync("orders", "alerts")
        self.say.order(held)
        self.say.step("the shop raises its max_rate to 1.00: the next pass sends it")
        with self.storage.engine.begin() as conn:
            conn.exec_driver_sql("UPDATE orders SET max_rate = '1.00' WHERE id = ?", (held,))
        await self.sync("orders", "alerts")
        self.say.order(held)

        finished = [
            o for o in self.storage.orders(state=OrderState.DONE)
            if o.service_id == 100 and o.status is not None and o.status.value == "Completed"
        ]  # fmt: skip
        if not finished:
            return
        order = finished[0]
        self.say.step(f"a customer asks for a refill of order {order.id}: sent, then tracked")
        (request_id,) = self.storage.queue_requests(RequestKind.REFILL, [order.id])
        for _ in range(15):
            await run_pass(self.config, self.storage, ("orders",))
            (request,) = [r for r in self.storage.order_requests(order.id) if r.id == request_id]
            status = f" ({request.status.value})" if request.status else ""
            print(f"    refill request {request.id}: {request.state}{status}")
            if request.state not in ("queued", "submitting", "sent"):
                break
            await asyncio.sleep(1)

    async def faults(self) -> None:
        self.say.step("the provider's proxy answers HTML 502 pages: jobs fail, nothing changes")
        self.sim.inject(Fault.HTML_502, times=None)
        await self.sync("catalog", "balance", "alerts")
        await self.sync("balance", "alerts")
        self.sim.clear_faults()

        self.say.step("the provider answers an empty catalog: the safety valve refuses it")
        self.sim.inject(Fault.EMPTY_LIST, times=1)
        await self.sync("catalog", "alerts")

        self.say.step("back to normal, and the balance topped up")
        self.sim.balance += Decimal("100")
        await self.sync("catalog", "balance", "alerts")

    async def forever(self) -> None:
        self.say.step("syncing every 10 s with random catalog changes; Ctrl-C stops")
        rng = random.Random(7)  # noqa: S311 (picks a service to reprice, not a secret)
        try:
            while True:
                await asyncio.sleep(10)
                service = rng.choice(list(self.sim.packages))
                rate = self.sim.packages[service].rate * Decimal("1.1")
                self.sim.set_rate(service, rate.quantize(Decimal("0.0001")))
                await self.sync("catalog", "balance", "orders", "alerts")
                self.say.changes()
        except asyncio.CancelledError:
            pass


class _Narrator:
    def __init__(self, storage: Storage, receiver: WebhookReceiver) -> None:
        self._storage = storage
        self._receiver = receiver
        self._cursor = 0
        self._number = 0

    def step(self, text: str) -> None:
        self._number += 1
        print(f"\n[{self._number}] {text}")

    def results(self, results: Sequence[JobResult]) -> None:
        for r in results:
            outcome = "ok" if r.ok else "FAILED"
            print(f"    {r.job:<8} {outcome}: {r.message}")

    def received(self) -> None:
        for alert, verified in self._receiver.new():
            check = "signature ok" if verified else "BAD SIGNATURE"
            print(f"    webhook got alert {alert['id']} {alert['type']} ({check}): {alert['text']}")

    def order(self, order_id: int) -> None:
        order = self._storage.order(order_id)
        if order is not None:
            error = f": {order.error}" if order.error else ""
            print(printable(f"    order {order.id}: {order.state}{error}"))

    def typed(self, order_id: int) -> None:
        """An order of another type than Default: its status and what its status says
        beyond the common fields (drip-feed runs, subscription posts, child orders)."""
        order = self._storage.order(order_id)
        if order is None:
            return
        with self._storage.engine.connect() as conn:
            ((params, extra),) = conn.exec_driver_sql(
                "SELECT params, status_extra FROM orders WHERE id = ?", (order_id,)
            ).fetchall()
        status = f" {order.status.value}" if order.status else ""
        if order.status and order.status_raw and order.status_raw != order.status.value:
            status += f" ({order.status_raw})"  # the provider's word: Active, Expired...
        error = f" ({order.error})" if order.error else ""
        shown = f"; {_json_text(extra)}" if extra is not None else ""
        print(printable(f"    order {order.id} [{_json_text(params)}] -> {order.state}{status}"
                        f"{error}{shown}"))  # fmt: skip

    def orders(self, *, brief: bool = False) -> None:
        orders = self._storage.orders(provider=PROVIDER)
        changes = self._storage.order_change_count()
        if brief:
            states = Counter(o.status.value if o.status else str(o.state) for o in orders)
            print(f"    {', '.join(f'{n} {s}' for s, n in sorted(states.items()))}"
                  f"  ({changes} rows in order_changes)")  # fmt: skip
            return
        for o in reversed(orders):
            status = f" {o.status.value}" if o.status else ""
            detail = f" remains {o.remains}, charge {o.charge}" if o.status else ""
            error = f" ({o.error})" if o.error else ""
            print(f"    order {o.id}: service {o.service_id} x{o.quantity} -> {o.state}"
                  f"{status}{detail}{error}")  # fmt: skip

    def changes(self, *, summary_only: bool = False) -> None:
        """Follow package_changes with a cursor, as a database consumer would."""
        records = self._storage.package_changes(PROVIDER, after=self._cursor, limit=100_000)
        if records:
            self._cursor = records[-1].id
        if summary_only:
            added = sum(1 for r in records if r.change is ChangeKind.ADDED)
            print(f"    package_changes: {added} added")
            return
        for r in records:
            detail = f" {r.field}: {r.old_value} -> {r.new_value}" if r.field else ""
            print(f"    package_changes #{r.id}: service {r.service_id} {r.change.value}{detail}")


def _json_text(value: object) -> str:
    """A JSON column as one short line, whether the driver gave it parsed or as text."""
    if value is None:
        return ""
    if isinstance(value, str):
        text = value
        try:
            value = json.loads(text)
        except ValueError:
            return text  # the caller makes the line printable
    if isinstance(value, dict):
        return ", ".join(f"{k} {json.dumps(v)}" for k, v in value.items())
    return json.dumps(value)
