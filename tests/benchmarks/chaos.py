"""Chaos soak: several `syncd run` on one PostgreSQL while everything around them fails.

    python tests/benchmarks/chaos.py                      # 20 minutes, its own PostgreSQL
    python tests/benchmarks/chaos.py --minutes 3 --seed 7
    python tests/benchmarks/chaos.py --database-url postgresql+psycopg://postgres@HOST/postgres \\
        --pg-data /var/lib/postgresql/15/main      # a server of yours: it restarts it

Not a test (CI does not run it): it takes minutes, and it prints figures and checks, each
PASS or FAIL, then exits 1 when a check failed. What runs, all on loopback:

- a PostgreSQL cluster of its own (initdb + pg_ctl on a free port in a temporary
  directory, as the `postgres` user when run as root); or, with `--database-url`, a fresh
  database created on that server and dropped at the end (`--pg-data` names the server's
  data directory, so that pg_ctl can restart it);
- two simulated providers (the `key` dialect: orders, refills, cancels) in this process,
  whose faults it switches on and off, and whose books it reads at the end;
- a webhook receiver that checks signatures and records every delivery by `webhook-id`
  (it answers 503 to the first attempt of every tenth alert, so redelivery is exercised);
- three `syncd run` (the `syncd` console script beside this Python), and one
  `syncd changes orders --follow` and one `syncd changes requests --follow`, recording
  every row id they print (a follower that exits is started again with `--since` its
  last id, as a script keeping its cursor would);
- a consumer that INSERTs queued orders (`--rate`, 3 a second) for both providers, as a
  panel does, and now and then a refill of a finished order and a cancel of an active one.

The chaos, seeded (`--seed`) and spread over `--minutes` (20 gives these counts; fewer
minutes, proportionally fewer, at least one of each): 15 `kill -9` of a random instance
holding a lease (started again 1-3 s later), 4 SIGSTOPs of 20-38 s (of one likewise),
4 `pg_ctl restart -m fast`, 8 fault spells of 10-30 s on one provider (HTML maintenance
page on `add`, 502 on every call after the provider acted, timeouts after it acted, 429
on every call, `{}` to status calls).
Then the faults stop and it waits (`--settle`, 5 minutes at most) until every order and
request is settled and every alert delivered.

What it checks (and how each figure is counted) is in `checks()` and in
docs/performance.md, "The chaos soak".
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import children
import psycopg

from syncd.secret import Secret
from syncd.simulator import Fault, SimulatedProvider, SimulatorServer
from syncd.webhooks.payload import signature

TOKEN = "soak-token-0123456789"
LINK = "https://soak.example/o/"  # + the consumer's serial: the provider's books name it
PROVIDERS = ("p1", "p2")
PROVIDER_TIMEOUT = 10.0  # seconds, each provider call (the `timeout` key)
SAMPLE_EVERY = 10.0  # seconds between RSS / fd samples
SETTLED_ORDERS = ("done", "rejected", "ambiguous", "missing", "abandoned")
SETTLED_REQUESTS = ("done", "rejected", "ambiguous")
# The chaos of a 20-minute run; a run of other length gets proportionally many.
PER_20_MINUTES = {"kill": 15, "stop": 4, "restart": 4, "spell": 8}
SPELLS = ("html_on_add", "5xx", "timeouts", "429", "status_empty")
WARM_UP = 20.0  # seconds of calm before the first chaos event
# A redelivery of an alert already answered 2xx counts as explained when syncd may have
# lost the record of that answer: an instance killed or stopped, or the database
# restarted, from this long before the answer until this long after it.
EXPLAINS_BEFORE, EXPLAINS_AFTER = 1.0, 10.0


def now() -> float:
    return time.time()


def say(started: float, text: str) -> None:
    print(f"[{now() - started:7.1f}s] {text}", flush=True)


# -- PostgreSQL ---------------------------------------------------------------------------


def postgres_bin() -> Path:
    """Where initdb and pg_ctl are: on PATH, or (Debian keeps them out of it) the newest
    /usr/lib/postgresql/N/bin."""
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    for candidate in reversed(versions):
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    sys.exit("chaos: no initdb/pg_ctl on PATH nor under /usr/lib/postgresql/*/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Postgres:
    """A server the soak may restart: its URL, and pg_ctl's view of it."""

    url: str
    data: Path
    pg_ctl: Path
    as_owner: list[str]  # `runuser -u postgres --` when run as root
    log: Path | None = None

    def restart(self) -> None:
        command = [*self.as_owner, str(self.pg_ctl), "-D", str(self.data), "-m", "fast", "-w"]
        if self.log is not None:
            command += ["-l", str(self.log)]
        # The server's own output must not hold a pipe of ours open: to a file or nowhere.
        subprocess.run(
            [*command, "restart"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=120,
        )


def as_owner_of(path: Path) -> list[str]:
    """The prefix that runs pg_ctl as the owner of ``path`` (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return []
    owner = path.owner()
    return [] if owner == "root" else ["runuser", "-u", owner, "--"]


@contextmanager
def own_cluster() -> Iterator[Postgres]:
    """A throw-away cluster on a free port, removed afterwards (as .ci/run starts one)."""
    bin_dir = postgres_bin()
    pg_dir = Path(tempfile.mkdtemp(prefix="syncd-soak-pg-"))
    as_pg: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(pg_dir, "postgres")
        as_pg = ["runuser", "-u", "postgres", "--"]
    data, log, port = pg_dir / "data", pg_dir / "log", free_port()
    initdb = [str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
    subprocess.run([*as_pg, *initdb], stdout=subprocess.DEVNULL, check=True)
    options = f"-p {port} -k {pg_dir} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o", options]
    subprocess.run([*as_pg, *start, "start"], stdout=subprocess.DEVNULL, check=True)
    try:
        yield Postgres(
            f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres",
            data,
            bin_dir / "pg_ctl",
            as_pg,
            log,
        )
    finally:
        subprocess.run(
            [*as_pg, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        shutil.rmtree(pg_dir, ignore_errors=True)


@contextmanager
def given_server(url: str, pg_data: Path) -> Iterator[Postgres]:
    """A fresh database on a server the caller runs (dropped afterwards)."""
    with children.database(url, Path("unused")) as fresh:
        yield Postgres(fresh, pg_data, postgres_bin() / "pg_ctl", as_owner_of(pg_data))


def conninfo(url: str) -> str:
    return "postgresql://" + url.partition("://")[2]


class Db:
    """One autocommit connection of the script's own, connected again after a restart."""

    def __init__(self, url: str) -> None:
        self._info = conninfo(url)
        self._conn: psycopg.Connection[Any] | None = None

    def rows(self, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """The rows of one statement; raises psycopg.OperationalError when the server is
        away (the next call connects again)."""
        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self._info, autocommit=True, connect_timeout=3)
            cursor = self._conn.execute(query, params)
            return cursor.fetchall() if cursor.description is not None else []
        except psycopg.OperationalError:
            self.close()
            raise

    def value(self, query: str, params: tuple[Any, ...] = ()) -> Any:
        rows = self.rows(query, params)
        return rows[0][0] if rows else None

    def close(self) -> None:
        if self._conn is not None:
            with suppress(Exception):
                self._conn.close()
        self._conn = None


# -- providers and the webhook receiver ---------------------------------------------------


@dataclass
class Provider:
    name: str
    sim: SimulatedProvider
    server: SimulatorServer


def start_providers(stack: ExitStack, order_duration: float) -> list[Provider]:
    providers = []
    for name in PROVIDERS:
        sim = SimulatedProvider(
            dialect="key",  # offers refills and cancels
            token=TOKEN,
            balance=Decimal("1000000.00"),
            order_duration=order_duration,
            refill_duration=order_duration,
            retry_after=5,
        )
        providers.append(Provider(name, sim, stack.enter_context(SimulatorServer(sim))))
    return providers


@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    at: float
    status: int  # what the receiver answered
    verified: bool


class _HookServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, secret: Secret) -> None:
        self.secret = secret
        self.deliveries: list[Delivery] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _HookHandler)


class _HookHandler(BaseHTTPRequestHandler):
    server: _HookServer

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        webhook_id = self.headers.get("webhook-id", "")
        expected = signature(
            self.server.secret, webhook_id, self.headers.get("webhook-timestamp", ""), body
        )
        verified = self.headers.get("webhook-signature") == expected
        with self.server.lock:
            first = not any(d.webhook_id == webhook_id for d in self.server.deliveries)
            # Every tenth alert's first attempt fails: redelivery is part of the soak. (A
            # failed delivery holds the webhook's later alerts back until its retry, 30 s
            # on: failing more would leave a burst of alerts undelivered for many minutes.)
            status = 401 if not verified else 503 if first and _every_tenth(webhook_id) else 204
            self.server.deliveries.append(Delivery(webhook_id, now(), status, verified))
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _every_tenth(webhook_id: str) -> bool:
    return webhook_id.isdigit() and int(webhook_id) % 10 == 0


@contextmanager
def webhook_receiver(secret: Secret) -> Iterator[_HookServer]:
    server = _HookServer(secret)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def write_config(
    path: Path, url: str, providers: list[Provider], hook_url: str, secret: Secret, lease: str
) -> None:
    blocks = [
        f'[database]\nurl = "{url}"\n',
        '[logging]\nformat = "json"\nlevel = "info"\n',
        f'[cluster]\nlease_ttl = "{lease}"\n',
    ]
    blocks += [
        f'[[providers]]\nname = "{p.name}"\nurl = "{p.server.url}"\ntoken = "{TOKEN}"\n'
        f'dialect = "key"\norders_interval = "5s"\ncatalog_interval = "10m"\n'
        f'balance_interval = "1m"\ntimeout = "{PROVIDER_TIMEOUT:g}s"\n'
        for p in providers
    ]
    blocks.append(
        f'[[webhooks]]\nname = "soak"\nurl = "{hook_url}"\nsecret = "{secret.reveal()}"\n'
    )
    path.write_text("\n".join(blocks), encoding="utf-8")


# -- syncd's processes ----------------------------------------------------------------------


def syncd_command() -> list[str]:
    """The console script installed beside this Python (a venv's bin/syncd)."""
    script = Path(sys.executable).parent / "syncd"
    if not script.exists():
        sys.exit(f"chaos: no syncd console script at {script}: pip install -e . first")
    return [str(script)]


def child_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}


class Instance:
    """One `syncd run`; its log collects every life of it (kill -9 starts it again)."""

    def __init__(self, slot: int, config: Path, log: Path) -> None:
        self.slot = slot
        self._command = [*syncd_command(), "--config", str(config), "run"]
        self._log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.stopped = False  # SIGSTOPped right now
        self.lock = threading.Lock()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        with self._log.open("ab") as log:
            self.process = subprocess.Popen(
                self._command, stdout=log, stderr=subprocess.STDOUT, env=child_env()
            )
        self.started_at = now()
        self.stopped = False

    def signal(self, signum: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signum)

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait()

    def terminate(self) -> None:
        if self.stopped:
            self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        if self.process is not None:
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


class Follower(threading.Thread):
    """`syncd changes FEED --follow`, recording each id it prints. Started again with
    `--since` the last id whenever it exits (counted in ``restarts``)."""

    def __init__(self, feed: str, config: Path, log: Path) -> None:
        super().__init__(daemon=True)
        self.feed = feed
        self._base = [*syncd_command(), "--config", str(config), "changes", feed, "--follow"]
        self._log = log
        self.ids: list[int] = []
        self.restarts = 0
        self.exits: list[int] = []  # exit status of each life that ended by itself
        self._stopping = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def last(self) -> int:
        return self.ids[-1] if self.ids else 0

    def run(self) -> None:
        while not self._stopping.is_set():
            with self._log.open("ab") as log:
                self._process = subprocess.Popen(
                    [*self._base, "--since", str(self.last)],
                    stdout=subprocess.PIPE,
                    stderr=log,
                    env=child_env(),
                )
            assert self._process.stdout is not None
            for line in self._process.stdout:
                self.ids.append(int(json.loads(line)["id"]))
            code = self._process.wait()
            if not self._stopping.is_set():
                self.exits.append(code)
                self.restarts += 1
                time.sleep(0.5)

    def stop(self) -> None:
        self._stopping.set()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
        self.join(timeout=20)


# -- the consumer ---------------------------------------------------------------------------


@dataclass
class ConsumerCounts:
    orders: int = 0  # orders inserted (each link once, whatever the retries)
    refills: int = 0
    cancels: int = 0
    retries: int = 0  # statements tried again after the database went away


class Consumer(threading.Thread):
    """A panel: queued orders at ``rate`` a second, for a random provider and service;
    with each order, a one-in-ten chance of a refill of a finished order and of a cancel
    of an active one (one of each per order at most). Every statement is idempotent, so
    one whose outcome a restart hid is simply tried again."""

    def __init__(self, url: str, providers: list[Provider], rate: float, seed: int) -> None:
        super().__init__(daemon=True)
        self._db = Db(url)
        self._rate = rate
        self._rng = random.Random(seed)
        self._providers = [p.name for p in providers]
        packages = [p for p in providers[0].sim.packages.values() if p.type == "Default"]
        self._packages = packages
        self._refillable = [p.service for p in packages if p.refill]
        self._cancelable = [p.service for p in packages if p.cancel]
        self.counts = ConsumerCounts()
        self.done = threading.Event()

    def run(self) -> None:
        next_at = now()
        serial = 0
        while not self.done.is_set():
            next_at = max(next_at + 1 / self._rate, now() - 1)  # no burst after a restart
            self.done.wait(max(0.0, next_at - now()))
            serial += 1
            self._retrying(partial(self._order, serial))
            if self._rng.random() < 0.1:
                self._retrying(self._refill)
            if self._rng.random() < 0.1:
                self._retrying(self._cancel)
        self._db.close()

    def _retrying(self, step: Callable[[], None]) -> None:
        while not self.done.is_set():
            try:
                step()
                return
            except psycopg.OperationalError:
                self.counts.retries += 1
                self.done.wait(0.2)

    def _order(self, serial: int) -> None:
        package = self._rng.choice(self._packages)
        provider = self._rng.choice(self._providers)
        quantity = self._rng.randint(max(package.min, 100), min(package.max, 1000))
        link = f"{LINK}{serial}"
        self._db.rows(
            "INSERT INTO orders (provider, service_id, link, quantity, state) "
            "SELECT %s, %s, %s, %s, 'queued' WHERE NOT EXISTS "
            "(SELECT 1 FROM orders WHERE link = %s)",
            (provider, package.service, link, quantity, link),
        )
        self.counts.orders += 1

    def _refill(self) -> None:
        if self._request("refill", "o.state = 'done' AND o.status IN ('Completed', 'Partial')",
                         self._refillable):  # fmt: skip
            self.counts.refills += 1

    def _cancel(self) -> None:
        if self._request("cancel", "o.state = 'active'", self._cancelable):
            self.counts.cancels += 1

    def _request(self, kind: str, which: str, services: list[int]) -> bool:
        rows = self._db.rows(
            f"INSERT INTO order_requests (order_id, kind) SELECT o.id, %s FROM orders o "
            f"WHERE {which} AND o.service_id = ANY(%s) AND NOT EXISTS (SELECT 1 FROM "
            "order_requests r WHERE r.order_id = o.id AND r.kind = %s) "
            "ORDER BY random() LIMIT 1 RETURNING id",
            (kind, services, kind),
        )
        return bool(rows)


# -- chaos ----------------------------------------------------------------------------------


@dataclass
class Event:
    at: float  # seconds after the start
    kind: str  # kill, stop, restart, spell
    duration: float = 0.0
    provider: str = ""
    spell: str = ""


@dataclass
class Spell:
    provider: str
    kind: str
    start: float  # wall clock
    end: float


def plan(minutes: float, rng: random.Random) -> list[Event]:
    """The chaos of a run: each kind's events spread over the run, one per equal slot at a
    random place in it (so spells never overlap), the last ending 15 s before the end."""
    window = minutes * 60 - WARM_UP - 15
    spell_kinds = list(SPELLS)
    rng.shuffle(spell_kinds)
    events = []
    for kind, per_20 in PER_20_MINUTES.items():
        count = max(1, round(per_20 * minutes / 20))
        slot = window / count
        for n in range(count):
            duration = {"stop": rng.uniform(20, 38), "spell": rng.uniform(10, 30)}.get(kind, 0)
            at = WARM_UP + n * slot + rng.uniform(0, max(0.0, slot - duration))
            events.append(
                Event(at, kind, duration, rng.choice(PROVIDERS), spell_kinds[n % len(SPELLS)])
            )
    return sorted(events, key=lambda e: e.at)


def inject(sim: SimulatedProvider, kind: str) -> None:
    """Switch one fault spell on for every call until ``clear_faults()``."""
    match kind:
        case "html_on_add":  # a maintenance page: the provider did nothing
            sim.inject(Fault.HTML_200, times=None, actions=["add"])
        case "5xx":  # a proxy's 502 after the provider acted
            sim.inject(Fault.HTML_502, times=None, after_processing=True)
        case "timeouts":  # no answer, after the provider acted
            sim.inject(Fault.TIMEOUT, times=None, after_processing=True)
        case "429":
            sim.inject(Fault.RATE_LIMIT, times=None)
        case "status_empty":
            sim.inject(Fault.REPLY, times=None, actions=["status"], reply={})
        case _:
            raise ValueError(kind)


@dataclass
class Chaos:
    """What the chaos did, for the figures."""

    kills: list[float] = field(default_factory=list)  # wall clock of each
    stops: list[tuple[float, float]] = field(default_factory=list)  # SIGSTOP, SIGCONT
    restarts: list[float] = field(default_factory=list)  # when pg_ctl restart began
    back_to_work: list[float | None] = field(default_factory=list)  # seconds; None: never
    # Per restart: no lease holder was running then (all just killed or stopped), so the
    # time until a write measures a lease takeover, not the restart.
    unattended: list[bool] = field(default_factory=list)
    spells: list[Spell] = field(default_factory=list)


class Chaotic:
    """Runs the plan against the instances, the database and the providers."""

    def __init__(
        self,
        instances: list[Instance],
        postgres: Postgres,
        providers: list[Provider],
        rng: random.Random,
        started: float,
    ) -> None:
        self.instances = instances
        self.postgres = postgres
        self.providers = {p.name: p for p in providers}
        self.rng = rng
        self.started = started
        self.chaos = Chaos()
        self._later: list[threading.Thread] = []
        self._watch = Db(postgres.url)

    def run(self, events: list[Event]) -> None:
        for event in events:
            time.sleep(max(0.0, self.started + event.at - now()))
            getattr(self, f"_{event.kind}")(event)

    def settle(self) -> None:
        """Wait for every delayed step (restarts, SIGCONTs, spell ends) to happen."""
        for thread in self._later:
            thread.join()
        for instance in self.instances:
            with instance.lock:
                if not instance.running:
                    instance.start()
        self._watch.close()

    def _after(self, seconds: float, step: Callable[[], None]) -> None:
        def later() -> None:
            time.sleep(seconds)
            step()

        thread = threading.Thread(target=later, daemon=True)
        thread.start()
        self._later.append(thread)

    def _pick(self) -> Instance | None:
        """A random instance among those running, one holding a lease when any does
        (killing one that works for nobody tests only its start); None when only one is
        left working."""
        free = [i for i in self.instances if i.running and not i.stopped]
        if len(free) < 2:
            return None
        holders = self._holders()
        working = [i for i in free if i.process is not None and i.process.pid in holders]
        return self.rng.choice(working or free)

    def _role(self, instance: Instance) -> str:
        pid = instance.process.pid if instance.process is not None else 0
        return f"pid {pid}, {'a' if pid in self._holders() else 'no'} lease holder"

    def _holders(self) -> set[int]:
        """The pids holding a lease now (holders are `host:pid:start`)."""
        try:
            rows = self._watch.rows("SELECT holder FROM leases WHERE expires_at > now()")
        except psycopg.Error:
            return set()
        pids = (str(holder).split(":")[1] for (holder,) in rows if str(holder).count(":") == 2)
        return {int(pid) for pid in pids if pid.isdigit()}

    def _kill(self, event: Event) -> None:
        victim = self._pick()
        if victim is None:
            say(self.started, "kill -9: skipped, only one instance is working")
            return
        role = self._role(victim)
        with victim.lock:
            victim.kill()
        self.chaos.kills.append(now())
        pause = self.rng.uniform(1, 3)
        say(self.started, f"kill -9 instance {victim.slot} ({role}), back in {pause:.1f} s")

        def again() -> None:
            with victim.lock:
                victim.start()

        self._after(pause, again)

    def _stop(self, event: Event) -> None:
        victim = self._pick()
        if victim is None:
            say(self.started, "SIGSTOP: skipped, only one instance is working")
            return
        role = self._role(victim)
        with victim.lock:
            victim.signal(signal.SIGSTOP)
            victim.stopped = True
        stopped_at = now()
        say(self.started, f"SIGSTOP instance {victim.slot} ({role}) for {event.duration:.0f} s")

        def resume() -> None:
            with victim.lock:
                victim.signal(signal.SIGCONT)
                victim.stopped = False
            self.chaos.stops.append((stopped_at, now()))
            say(self.started, f"SIGCONT instance {victim.slot}")

        self._after(event.duration, resume)

    def _restart(self, event: Event) -> None:
        holders = self._holders()
        working = {i.process.pid for i in self.instances
                   if i.process is not None and i.running and not i.stopped}  # fmt: skip
        unattended = not holders & working
        began = now()
        self.chaos.restarts.append(began)
        self.postgres.restart()
        up = now()
        say(self.started, f"pg_ctl restart -m fast: down and up in {up - began:.1f} s")
        delay = self._first_write_after(up)
        self.chaos.back_to_work.append(delay)
        self.chaos.unattended.append(unattended)
        said = f"{delay:.2f} s" if delay is not None else "nothing within 60 s"
        why = " (no lease holder was running: a takeover came first)" if unattended else ""
        say(self.started, f"  an instance wrote again after {said}{why}")

    def _first_write_after(self, up: float, wait: float = 60) -> float | None:
        """Seconds from the server being up until the first order_changes row syncd wrote
        after it (polled every 50 ms)."""
        after = datetime.fromtimestamp(up, UTC)
        while now() < up + wait:
            with suppress(psycopg.OperationalError):
                first = self._watch.value(
                    "SELECT min(changed_at) FROM order_changes WHERE id > (SELECT "
                    "coalesce(max(id), 0) - 1000 FROM order_changes) AND changed_at > %s",
                    (after,),
                )
                if first is not None:
                    return float(first.timestamp() - up)
            time.sleep(0.05)
        return None

    def _spell(self, event: Event) -> None:
        provider = self.providers[event.provider]
        inject(provider.sim, event.spell)
        spell = Spell(provider.name, event.spell, now(), now() + event.duration)
        say(self.started, f"fault spell on {provider.name}: {event.spell}, "
                          f"{event.duration:.0f} s")  # fmt: skip

        def end() -> None:
            provider.sim.clear_faults()
            spell.end = now()
            self.chaos.spells.append(spell)
            say(self.started, f"fault spell on {provider.name} over")

        self._after(event.duration, end)


class Sampler(threading.Thread):
    """RSS (kB) and open file descriptors of each instance's process every 10 s."""

    def __init__(self, instances: list[Instance]) -> None:
        super().__init__(daemon=True)
        self.instances = instances
        self.samples: dict[int, list[tuple[float, int, int]]] = {}  # pid: (time, rss, fds)
        self.born: dict[int, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(SAMPLE_EVERY):
            for instance in self.instances:
                process = instance.process
                if process is None or process.poll() is not None:
                    continue
                with suppress(OSError, ValueError):
                    status = Path(f"/proc/{process.pid}/status").read_text()
                    rss = next(int(line.split()[1]) for line in status.splitlines()
                               if line.startswith("VmRSS:"))  # fmt: skip
                    fds = len(os.listdir(f"/proc/{process.pid}/fd"))
                    self.samples.setdefault(process.pid, []).append((now(), rss, fds))
                    self.born.setdefault(process.pid, instance.started_at)


# -- figures and checks -----------------------------------------------------------------------


@dataclass
class Growth:
    pid: int
    lived: float  # seconds sampled
    rss: tuple[int, int]  # kB, first (after a minute of life) and last
    fds: tuple[int, int]


@dataclass
class Figures:
    minutes: float
    seed: int
    consumer: ConsumerCounts
    orders: Counter[str]  # local orders by state
    unsettled: list[int]  # ids of orders not settled
    sent_twice: int  # provider orders beyond the first for one local order
    phantoms: int  # provider orders whose link names no local order
    mismatched: list[int]  # active/done orders whose provider id is not the provider's order
    rejected_but_taken: list[int]  # rejected (nothing sent, syncd says) yet the provider has it
    ambiguous_held: int  # ambiguous orders the provider did take
    missing_held: list[int]  # orders syncd gave up as missing that the provider holds
    ambiguous_by_spell: list[tuple[Spell, int]]
    ambiguous_outside: int  # ambiguous orders submitted outside every spell
    requests: Counter[str]
    requests_unsettled: int
    refills_unnamed: int  # refills a provider holds that no local request names
    # Per feed: rows, rows printed, missed, printed twice, in order, the follower's exits.
    feeds: dict[str, tuple[int, int, int, int, bool, list[int]]]
    tracebacks: int
    follower_tracebacks: int
    chaos: Chaos
    growth: list[Growth]
    deliveries: int
    redelivered_after_failure: int
    duplicates_explained: int
    duplicates_unexplained: list[str]
    unsigned: int
    undelivered: int
    alerts: Counter[str]  # raised, by event type


@dataclass
class Check:
    name: str
    passed: bool | None  # None: not measured in this run
    detail: str


def analyse_orders(db: Db, providers: list[Provider], chaos: Chaos) -> dict[str, Any]:
    rows = db.rows(
        "SELECT id, provider, state, provider_order_id, link, submitted_at, error "
        "FROM orders WHERE link LIKE %s",
        (LINK + "%",),
    )
    by_link = {r[4]: r for r in rows}
    states = Counter(r[2] for r in rows)
    unsettled = [r[0] for r in rows if r[2] not in SETTLED_ORDERS]
    held: dict[int, list[tuple[str, int]]] = {}  # local id: the provider orders naming it
    phantoms = 0
    for provider in providers:
        for order in list(provider.sim.orders.values()):
            local = by_link.get(order.link)
            if local is None:
                phantoms += 1
            else:
                held.setdefault(local[0], []).append((provider.name, order.id))
    sent_twice = sum(len(v) - 1 for v in held.values() if len(v) > 1)
    mismatched, rejected_taken, missing_held, ambiguous_held = [], [], [], 0
    for order_id, provider, state, provider_order_id, *_ in rows:
        at_provider = held.get(order_id, [])
        if state in ("active", "done") and at_provider != [(provider, provider_order_id)]:
            mismatched.append(order_id)
        elif state in ("rejected", "queued") and at_provider:
            rejected_taken.append(order_id)
        elif state == "ambiguous" and at_provider:
            ambiguous_held += 1
        elif state == "missing" and at_provider:
            missing_held.append(order_id)
    # Ambiguous orders by the spell their submission fell in (a call may hang for the
    # provider timeout after the spell's end).
    ambiguous = [(r[1], r[5].timestamp()) for r in rows if r[2] == "ambiguous" and r[5]]
    by_spell = []
    counted: set[int] = set()
    for spell in chaos.spells:
        inside = [
            n for n, (provider, at) in enumerate(ambiguous)
            if provider == spell.provider and spell.start <= at <= spell.end + PROVIDER_TIMEOUT
        ]  # fmt: skip
        counted.update(inside)
        by_spell.append((spell, len(inside)))
    return {
        "orders": states,
        "unsettled": unsettled,
        "sent_twice": sent_twice,
        "phantoms": phantoms,
        "mismatched": mismatched,
        "rejected_but_taken": rejected_taken,
        "ambiguous_held": ambiguous_held,
        "missing_held": missing_held,
        "ambiguous_by_spell": by_spell,
        "ambiguous_outside": len(ambiguous) - len(counted),
        "order_ids": {(r[1], r[3]): r[0] for r in rows if r[3] is not None},
        "links": {r[4]: r[0] for r in rows},
    }


def analyse_requests(db: Db, providers: list[Provider], links: dict[str, int]) -> dict[str, Any]:
    rows = db.rows("SELECT order_id, kind, state, provider_request_id FROM order_requests")
    states = Counter(r[2] for r in rows)
    unsettled = sum(1 for r in rows if r[2] not in SETTLED_REQUESTS)
    # Refills the providers hold per local order, against the local refill requests that
    # name them or may have been taken (ambiguous): more is a refill sent twice.
    known: dict[int, set[int]] = {}
    maybe: Counter[int] = Counter()
    for order_id, kind, state, request_id in rows:
        if kind == "refill" and request_id is not None:
            known.setdefault(order_id, set()).add(int(request_id))
        if kind == "refill" and state == "ambiguous":
            maybe[order_id] += 1
    twice = 0
    for provider in providers:
        per_order: dict[int, list[int]] = {}
        for refill in list(provider.sim.refills.values()):
            sim_order = provider.sim.orders.get(refill.order)
            local = links.get(sim_order.link) if sim_order else None
            if local is not None:
                per_order.setdefault(local, []).append(refill.id)
        for local, refill_ids in per_order.items():
            unexplained = [r for r in refill_ids if r not in known.get(local, set())]
            twice += max(0, len(unexplained) - maybe[local])
    return {"requests": states, "requests_unsettled": unsettled, "refills_unnamed": twice}


def analyse_feed(
    db: Db, table: str, follower: Follower
) -> tuple[int, int, int, int, bool, list[int]]:
    every = [r[0] for r in db.rows(f"SELECT id FROM {table} ORDER BY id")]
    seen = follower.ids
    ordered = all(a < b for a, b in itertools.pairwise(seen))
    missed = len(set(every) - set(seen))
    return len(every), len(seen), missed, len(seen) - len(set(seen)), ordered, follower.exits


def analyse_growth(sampler: Sampler) -> list[Growth]:
    """Per process that lived long enough (2 minutes sampled after its first minute):
    its first sample taken a minute or more into its life against its last."""
    growth = []
    for pid, samples in sampler.samples.items():
        settled = [s for s in samples if s[0] >= sampler.born[pid] + 60]
        if len(settled) < 2 or settled[-1][0] - settled[0][0] < 120:
            continue
        first, last = settled[0], settled[-1]
        growth.append(Growth(pid, last[0] - first[0], (first[1], last[1]), (first[2], last[2])))
    return growth


def analyse_webhooks(hooks: _HookServer, chaos: Chaos) -> dict[str, Any]:
    """A delivery after one the receiver answered 2xx is a duplicate; it is explained when
    an instance was killed or stopped, or the database restarted, around that answer (the
    answer may never have been recorded), and unexplained otherwise."""
    with hooks.lock:
        deliveries = list(hooks.deliveries)
    troubles = chaos.kills + [s for s, _ in chaos.stops] + chaos.restarts
    first_ok: dict[str, float] = {}
    after_failure = explained = 0
    unexplained = []
    failed: set[str] = set()
    for d in deliveries:
        if d.webhook_id in first_ok:
            answered = first_ok[d.webhook_id]
            if any(answered - EXPLAINS_BEFORE <= t <= answered + EXPLAINS_AFTER for t in troubles):
                explained += 1
            else:
                unexplained.append(d.webhook_id)
        elif d.webhook_id in failed:
            after_failure += 1
        if 200 <= d.status < 300:
            first_ok.setdefault(d.webhook_id, d.at)
        else:
            failed.add(d.webhook_id)
    return {
        "deliveries": len(deliveries),
        "redelivered_after_failure": after_failure,
        "duplicates_explained": explained,
        "duplicates_unexplained": unexplained,
        "unsigned": sum(1 for d in deliveries if not d.verified),
    }


def count_tracebacks(paths: list[Path]) -> int:
    return sum(p.read_text(errors="replace").count("Traceback") for p in paths if p.exists())


def checks(f: Figures) -> list[Check]:
    inserted = f.consumer.orders
    settled = sum(f.orders[s] for s in SETTLED_ORDERS)
    total = sum(f.orders.values())
    spell_counts = [n for _, n in f.ambiguous_by_spell]
    delays = f.chaos.back_to_work
    # A restart while no lease holder was running measures a takeover: shown, not judged.
    judged = [d for d, alone in zip(delays, f.chaos.unattended, strict=True) if not alone]
    result = [
        Check("orders settled", total == inserted and not f.unsettled,
              f"{settled} of {total} in the database settled ({inserted} inserted): "
              + ", ".join(f"{s} {n}" for s, n in sorted(f.orders.items()))),
        Check("orders sent twice", f.sent_twice == 0 and f.phantoms == 0,
              f"{f.sent_twice} sent twice, {f.phantoms} provider orders no local order names"),
        Check("provider books agree", not f.mismatched and not f.rejected_but_taken,
              f"{len(f.mismatched)} active/done orders not matching the provider's order "
              f"{f.mismatched[:5]}, {len(f.rejected_but_taken)} rejected/queued orders the "
              f"provider holds {f.rejected_but_taken[:5]}; ambiguous orders the provider "
              f"holds: {f.ambiguous_held} of {f.orders['ambiguous']}"),
        Check("no order the provider holds given up as missing", not f.missing_held,
              f"{len(f.missing_held)} of {f.orders['missing']} missing orders are held by "
              f"their provider {f.missing_held[:5]}"),
        Check("ambiguous orders per spell (target <= 1)",
              max(spell_counts, default=0) <= 1,
              "per spell: " + ", ".join(f"{s.provider}/{s.kind} {n}"
                                        for s, n in f.ambiguous_by_spell)
              + f"; outside spells (kills, stops): {f.ambiguous_outside}"),
        Check("requests settled", f.requests_unsettled == 0,
              f"{f.consumer.refills} refills and {f.consumer.cancels} cancels inserted: "
              + ", ".join(f"{s} {n}" for s, n in sorted(f.requests.items()))),
        Check("refills the providers hold are named by a request", f.refills_unnamed == 0,
              f"{f.refills_unnamed} not named by any (sent twice, or taken and not recorded)"),
    ]  # fmt: skip
    for feed, (rows, seen, missed, dupes, ordered, exits) in f.feeds.items():
        result.append(
            Check(
                f"{feed} feed followed",
                missed == 0 and dupes == 0 and ordered,
                f"{seen} rows printed of {rows}, {missed} missed, {dupes} twice, "
                f"{'in order' if ordered else 'OUT OF ORDER'}; "
                + (
                    f"the follower exited {len(exits)} times (status {sorted(set(exits))}), "
                    "each time started again with --since"
                    if exits
                    else "the follower never exited"
                ),
            )
        )
    growth = "; ".join(
        f"pid {g.pid} over {g.lived / 60:.0f} min: RSS {g.rss[0] / 1024:.0f} -> "
        f"{g.rss[1] / 1024:.0f} MB, fds {g.fds[0]} -> {g.fds[1]}"
        for g in f.growth
    )
    result += [
        Check("tracebacks in the instances' logs", f.tracebacks == 0,
              f"{f.tracebacks} (the followers' logs: {f.follower_tracebacks})"),
        Check("back to work after each database restart (<= 5 s)",
              all(d is not None and d <= 5 for d in judged),
              ", ".join(("never" if d is None else f"{d:.2f} s")
                        + (" (no lease holder running)" if alone else "")
                        for d, alone in zip(delays, f.chaos.unattended, strict=True))),
        Check("memory and file descriptors flat",
              None if not f.growth else all(
                  g.rss[1] <= g.rss[0] * 1.25 and g.fds[1] <= g.fds[0] + 10 for g in f.growth),
              growth or "no instance lived 3 minutes: nothing to compare"),
        Check("webhooks sent twice", not f.duplicates_unexplained and f.unsigned == 0,
              f"{f.deliveries} deliveries, {f.redelivered_after_failure} after a failed "
              f"answer (allowed), {f.duplicates_explained} after a 2xx answer near a kill, "
              f"stop or restart (allowed), {len(f.duplicates_unexplained)} otherwise "
              f"{f.duplicates_unexplained[:5]}, {f.unsigned} badly signed"),
        Check("alerts delivered", f.undelivered == 0,
              f"{f.undelivered} of {sum(f.alerts.values())} not delivered; raised: "
              + ", ".join(f"{e} {n}" for e, n in sorted(f.alerts.items()))),
    ]  # fmt: skip
    return result


def report(f: Figures, results: list[Check]) -> None:
    c = f.chaos
    print()
    print(f"chaos soak: {f.minutes:g} min, seed {f.seed}")
    print(f"  chaos    {len(c.kills)} kill -9, {len(c.stops)} SIGSTOP "
          f"({', '.join(f'{b - a:.0f}' for a, b in c.stops)} s), {len(c.restarts)} pg_ctl "
          f"restart, {len(c.spells)} fault spells")  # fmt: skip
    print(f"  consumer {f.consumer.orders} orders, {f.consumer.refills} refills, "
          f"{f.consumer.cancels} cancels, {f.consumer.retries} statements retried")  # fmt: skip
    for check in results:
        verdict = {True: "PASS", False: "FAIL", None: "----"}[check.passed]
        print(f"  {verdict}  {check.name}: {check.detail}")


# -- the run --------------------------------------------------------------------------------


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> bool:
    deadline = now() + timeout
    while now() < deadline:
        with suppress(psycopg.Error):  # the server restarting, the schema not there yet
            if condition():
                return True
        time.sleep(1)
    print(f"chaos: gave up waiting for {what} after {timeout:.0f} s", flush=True)
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description="A chaos soak of three syncd run instances.")
    parser.add_argument("--minutes", type=float, default=20.0, help="length of the chaos")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=3.0, help="orders inserted per second")
    parser.add_argument("--instances", type=int, default=3)
    parser.add_argument("--lease-ttl", default="30s", help="[cluster] lease_ttl")
    parser.add_argument(
        "--order-duration",
        type=float,
        default=20.0,
        help="seconds the simulated providers take to finish an order",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=300.0,
        help="seconds at most to wait for everything to settle after the chaos",
    )
    parser.add_argument("--database-url", help="a PostgreSQL server URL instead of our own")
    parser.add_argument("--pg-data", type=Path, help="with --database-url: its data directory")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the working directory (config, logs) even when all passed",
    )
    args = parser.parse_args()
    if (args.database_url is None) != (args.pg_data is None):
        parser.error("--database-url and --pg-data go together (pg_ctl restarts the server)")
    if args.minutes < 1:
        parser.error("--minutes: at least 1")
    if args.instances < 2:
        parser.error("--instances: at least 2 (the last one working is never killed)")

    work = Path(tempfile.mkdtemp(prefix="syncd-soak-"))
    print(f"chaos: working in {work}", flush=True)
    rng = random.Random(args.seed)
    with ExitStack() as stack:
        postgres = stack.enter_context(
            own_cluster() if args.database_url is None
            else given_server(args.database_url, args.pg_data)
        )  # fmt: skip
        providers = start_providers(stack, args.order_duration)
        secret = Secret("whsec_" + base64.b64encode(secrets.token_bytes(24)).decode())
        hooks = stack.enter_context(webhook_receiver(secret))
        config = work / "syncd.toml"
        host, port = hooks.server_address[:2]
        hook_url = f"http://{host!s}:{port}/hooks/syncd"
        write_config(config, postgres.url, providers, hook_url, secret, args.lease_ttl)
        figures = soak(args, rng, work, config, postgres, providers, hooks)
    results = checks(figures)
    report(figures, results)
    failed = any(c.passed is False for c in results)
    if failed or args.keep:
        print(f"chaos: logs and config kept in {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


def soak(
    args: argparse.Namespace,
    rng: random.Random,
    work: Path,
    config: Path,
    postgres: Postgres,
    providers: list[Provider],
    hooks: _HookServer,
) -> Figures:
    db = Db(postgres.url)
    started = now()
    instances = [Instance(n, config, work / f"instance-{n}.log") for n in range(args.instances)]
    followers = [Follower(feed, config, work / f"follow-{feed}.log")
                 for feed in ("orders", "requests")]  # fmt: skip
    try:
        # One instance creates the schema and syncs both catalogs before the others start.
        instances[0].start()
        wait_for(lambda: db.value("SELECT count(DISTINCT provider) FROM packages")
                 == len(providers), 90, "the first catalogs")  # fmt: skip
        for instance in instances[1:]:
            instance.start()
        for follower in followers:
            follower.start()
        say(started, f"{len(instances)} instances and 2 followers running")
        consumer = Consumer(postgres.url, providers, args.rate, args.seed)
        sampler = Sampler(instances)
        consumer.start()
        sampler.start()
        chaotic = Chaotic(instances, postgres, providers, rng, started)
        chaotic.run(plan(args.minutes, rng))
        time.sleep(max(0.0, started + args.minutes * 60 - now()))
        say(started, "chaos over; waiting for the last SIGCONTs, restarts and spell ends")
        chaotic.settle()
        consumer.done.set()
        consumer.join()
        say(started, f"consumer stopped after {consumer.counts.orders} orders; settling")
        settled = wait_for(lambda: _all_settled(db, followers), args.settle, "settling")
        say(started, "settled" if settled else "NOT settled")
        sampler.done.set()
        for instance in instances:
            instance.terminate()
        for follower in followers:
            follower.stop()
        orders = analyse_orders(db, providers, chaotic.chaos)
        requests = analyse_requests(db, providers, orders.pop("links"))
        orders.pop("order_ids")
        feeds = {
            "orders": analyse_feed(db, "order_changes", followers[0]),
            "requests": analyse_feed(db, "request_changes", followers[1]),
        }
        undelivered = int(db.value("SELECT count(*) FROM alert_deliveries "
                                   "WHERE delivered_at IS NULL"))  # fmt: skip
        return Figures(
            minutes=args.minutes,
            seed=args.seed,
            consumer=consumer.counts,
            **orders,
            **requests,
            feeds=feeds,
            tracebacks=count_tracebacks([work / f"instance-{i.slot}.log" for i in instances]),
            follower_tracebacks=count_tracebacks([work / "follow-orders.log",
                                                  work / "follow-requests.log"]),
            chaos=chaotic.chaos,
            growth=analyse_growth(sampler),
            **analyse_webhooks(hooks, chaotic.chaos),
            undelivered=undelivered,
            alerts=Counter(dict(db.rows("SELECT event, count(*) FROM alerts GROUP BY event"))),
        )  # fmt: skip
    finally:
        for instance in instances:
            if instance.running:
                instance.terminate()
        for follower in followers:
            if follower.is_alive():
                follower.stop()
        db.close()


def _all_settled(db: Db, followers: list[Follower]) -> bool:
    open_orders = db.value(
        "SELECT count(*) FROM orders WHERE state <> ALL(%s)", (list(SETTLED_ORDERS),)
    )
    open_requests = db.value(
        "SELECT count(*) FROM order_requests WHERE state <> ALL(%s)", (list(SETTLED_REQUESTS),)
    )
    undelivered = db.value(
        "SELECT count(*) FROM alert_deliveries WHERE delivered_at IS NULL AND failed_at IS NULL"
    )
    last_orders = db.value("SELECT coalesce(max(id), 0) FROM order_changes")
    last_requests = db.value("SELECT coalesce(max(id), 0) FROM request_changes")
    return bool(
        open_orders == 0
        and open_requests == 0
        and undelivered == 0
        and followers[0].last >= last_orders
        and followers[1].last >= last_requests
    )


if __name__ == "__main__":
    sys.exit(main())
