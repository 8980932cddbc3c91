"""The configuration schema: one frozen dataclass per TOML table.

Each field is written once, here: its type, its default, how it is read (its ``Kind``,
bounds included) and one line saying what it means. The reader, the checks of
``config.example.toml`` and the generated reference (``docs/configuration.md``) all take
the keys, defaults and choices from these fields; a closed list of choices is a
``Literal`` type, read with ``typing.get_args``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any, Literal, get_args

from syncd.config.credentials import Credential, is_webhook_secret
from syncd.config.readers import (
    Choice,
    Duration,
    Flag,
    HostPort,
    Integer,
    Kind,
    Parsed,
    Reader,
    Subset,
    Table,
    Tables,
    Text,
    about,
    amount,
    join,
)
from syncd.deadlines import FEWEST_PER_MINUTE, LONGEST_TIMEOUT, MOST_CONCURRENT, THROTTLED_AFTER
from syncd.errors import UserError
from syncd.ledger import Tolerance, parse_tolerance
from syncd.limits import ACTIONS, CallLimit, parse_limit
from syncd.models import Event
from syncd.provider.dialects import DIALECTS
from syncd.provider.urls import provider_url_problem, webhook_url_problem
from syncd.secret import Secret
from syncd.storage.urls import database_url_problem, url_login, with_password
from syncd.units import parse_percent, shown

LogFormat = Literal["auto", "json", "console"]
LogLevel = Literal["debug", "info", "warning", "error"]
WebhookFormat = Literal["json", "slack", "discord"]

_NAME_PATTERN = "[a-z0-9_-]+"
_NAME = re.compile(_NAME_PATTERN)
LONGEST_NAME = 64  # a provider's or webhook's name; a consumer row's longer one is cut short
SHORTEST_TOKEN = 8  # panels issue tokens of 32 characters and more; fewer is a wrong value
# The longest value of each duration that still makes sense (the rest: ten years). A
# request that takes over an hour (LONGEST_TIMEOUT, which call deadlines are built on) is a
# provider that is down; a job that runs less than monthly is not being synced.
LONGEST_INTERVAL = timedelta(days=30)
# A lease is renewed every third of it: a shorter one is lost to one slow transaction.
SHORTEST_LEASE = timedelta(seconds=6)
LONGEST_LEASE = timedelta(minutes=10)


def _name_problem(name: str) -> str | None:
    """Names go into the database and into every log line: keep them plain and short."""
    if not _NAME.fullmatch(name):
        return f"must match {_NAME_PATTERN} (got {shown(name)})"
    if len(name) > LONGEST_NAME:
        return f"must be at most {LONGEST_NAME} characters"
    return None


NAME = Text(_name_problem, f"name: `{_NAME_PATTERN}`, at most {LONGEST_NAME} characters")


def _sendable(password: str) -> bool:
    """Whether a driver can send the password: UTF-8 text (an environment variable may
    hold other bytes) without NUL (libpq refuses one, and says so quoting the value)."""
    try:
        password.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: bytes os.environ could not decode
        return False
    return "\0" not in password


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = field(
        default="sqlite:///syncd.db",
        metadata=about(
            Text(database_url_problem),
            "sqlite:///PATH, postgresql+psycopg://USER@HOST/DB or mysql+mysqldb://USER@HOST/DB",
        ),
    )
    # Kept out of the URL: a config file is read by more people (and copied into more bug
    # reports) than a credential. Only ``connect_url`` puts it into the URL.
    password: Secret | None = field(
        default=None,
        repr=False,
        metadata=about(
            Credential(
                inline=False,
                exact=True,
                check=_sendable,
                refused="holds a NUL character or bytes that are not UTF-8: no driver sends it",
            ),
            "the password syncd logs in with, kept out of url; unset: none, or the one in url",
        ),
    )
    # PostgreSQL: wake the submit job on NOTIFY as well as by its one-second poll. Off
    # behind a pooler in transaction mode (PgBouncer), where LISTEN does not work.
    notify: bool = field(
        default=True,
        metadata=about(
            Flag(),
            "PostgreSQL: send a newly queued order at once on NOTIFY (false behind PgBouncer)",
        ),
    )

    @property
    def connect_url(self) -> str:
        """The URL to connect with: ``url`` with the password in it. Every place that
        opens the database takes this one; a message shows ``url``, which never holds
        a password given by ``password_file`` or ``password_env``."""
        if self.password is None:
            return self.url
        return with_password(self.url, self.password.reveal())

    def secrets(self) -> list[Secret]:
        """The password syncd logs in with, wherever it was written (in the URL too)."""
        if self.password is not None:
            return [self.password]
        _, written = url_login(self.url)
        return [Secret(written)] if written else []

    @property
    def listens(self) -> bool:
        """Whether a running syncd LISTENs for notifications (notify on, and a database
        that sends them: PostgreSQL)."""
        from syncd.storage.backends import backend_for_url  # noqa: PLC0415

        return self.notify and backend_for_url(self.url).notifies


def _password_fits(database: DatabaseConfig) -> Iterator[tuple[str, str]]:
    """A password from a file or a variable needs an engine that logs in with one and a
    user to log in as, and must be the only password: syncd would not guess which of two
    is meant."""
    if database.password is None:
        return
    from syncd.storage.backends import backend_for_url  # noqa: PLC0415

    backend = backend_for_url(database.url)
    if not backend.takes_password:
        yield (
            "url",
            f"{backend.name} databases take no password: remove password_file / password_env",
        )
        return
    user, written = url_login(database.url)
    if written:
        yield (
            "url",
            "holds a password, and password_file / password_env gives one too: "
            "take the password out of the url",
        )
    elif not user:
        yield ("url", "names no user to log in with the password: write USER@ before the host")


@dataclass(frozen=True)
class LoggingConfig:
    format: LogFormat = field(
        default="auto",
        metadata=about(
            Choice(get_args(LogFormat)),
            "auto: readable lines on a terminal, JSON lines otherwise (what journald gets)",
        ),
    )
    level: LogLevel = field(
        default="info",
        metadata=about(Choice(get_args(LogLevel)), "the least severe log lines written"),
    )


@dataclass(frozen=True)
class Limits(Kind):
    """An inline table of per-action limits: ``{ add = "60/minute", packages = "10/hour" }``."""

    what = "table"
    pick = "keys among"

    def describe(self) -> str:
        return 'table of action = "N/second|minute|hour|day" (or "N/<duration>", "20/10s")'

    def options(self) -> tuple[str, ...]:
        return ACTIONS

    def read(
        self, r: Reader, t: Mapping[str, Any], at: str, name: str
    ) -> tuple[tuple[str, CallLimit], ...] | None:
        key = join(at, name)
        table = t[name]
        if not isinstance(table, dict):
            r.problem(key, 'must be a table such as { add = "60/minute" }')
            return None
        before = len(r.problems)
        read: dict[str, CallLimit] = {}
        for action in table:
            where = join(key, action)
            if action not in ACTIONS:
                r.problem(where, f"unknown action (one of {', '.join(ACTIONS)})")
            elif (limit := Parsed(parse_limit).read(r, table, key, action)) is not None:
                read[action] = limit
        return tuple(sorted(read.items())) if len(r.problems) == before else None

    def show(self, value: Any) -> str:
        return "{ " + ", ".join(f'{a} = "{limit}"' for a, limit in value) + " }"


@dataclass(frozen=True)
class ProviderConfig:
    name: str = field(metadata=about(NAME, "unique; names the provider in the database and logs"))
    url: str = field(
        metadata=about(
            Text(provider_url_problem), "the API endpoint; https:// (http:// only on loopback)"
        )
    )
    token: Secret = field(
        repr=False, metadata=about(Credential(SHORTEST_TOKEN), "the provider's API token")
    )
    dialect: str = field(
        default="api_token",
        metadata=about(
            Choice(tuple(DIALECTS)),
            "api_token: the reference API; key: the classic Perfect Panel one",
        ),
    )
    catalog_interval: timedelta = field(
        default=timedelta(hours=1),
        metadata=about(Duration(LONGEST_INTERVAL), "how often the service list is pulled"),
    )
    orders_interval: timedelta = field(
        default=timedelta(minutes=2),
        metadata=about(
            Duration(LONGEST_INTERVAL), "how often queued orders are sent and statuses synced"
        ),
    )
    balance_interval: timedelta = field(
        default=timedelta(minutes=10),
        metadata=about(Duration(LONGEST_INTERVAL), "how often the balance is polled"),
    )
    status_batch_size: int = field(
        default=100,
        metadata=about(
            Integer(1, 100), "order ids per multi-status call (more can fail the whole call)"
        ),
    )
    max_concurrency: int = field(
        default=4,
        metadata=about(
            Integer(1, MOST_CONCURRENT), "status calls in flight at once for this provider"
        ),
    )
    timeout: timedelta = field(
        default=timedelta(seconds=30),
        metadata=about(Duration(LONGEST_TIMEOUT), "each request, from connect to its last byte"),
    )
    low_balance: Decimal | None = field(
        default=None,
        metadata=about(
            Parsed(amount, "money"),
            "alert when the balance falls below this (provider currency); unset: never",
        ),
    )
    drift_tolerance: Tolerance = field(
        default=Tolerance(),
        metadata=about(
            Parsed(parse_tolerance, "percent or money"),
            "an unexplained fall of the balance beyond this raises balance.drift: a share "
            'of the balance ("0.5%") or an amount; never below the last decimal place',
        ),
    )
    give_up_after: timedelta = field(
        default=timedelta(days=30),
        metadata=about(Duration(), "active orders older than this become abandoned"),
    )
    requests_per_minute: int | None = field(
        default=None,
        metadata=about(
            Integer(FEWEST_PER_MINUTE, 60_000),
            "never more calls a minute, all jobs and processes together, spread evenly; "
            "unset: no limit",
        ),
    )
    # (action, limit) pairs, by action: a frozen config holds no dict.
    limits: tuple[tuple[str, CallLimit], ...] = field(
        default=(),
        metadata=about(
            Limits(),
            "each action's own limit as the provider publishes it, held by every process "
            "sharing the database; unset: none",
        ),
    )
    price_guard: Decimal | None = field(
        default=None,
        metadata=about(
            Parsed(parse_percent, "percentage"),
            "hold an order whose rate is more than this above the rate first quoted; unset: off",
        ),
    )
    throttled_after: timedelta = field(
        default=THROTTLED_AFTER,
        metadata=about(
            Duration(LONGEST_INTERVAL, shortest=timedelta(minutes=1)),
            "raise provider.throttled once the provider has answered only 429 for this long",
        ),
    )


@dataclass(frozen=True)
class WebhookConfig:
    name: str = field(metadata=about(NAME, "unique; names the receiver in logs"))
    url: str = field(
        metadata=about(Text(webhook_url_problem), "where alerts are POSTed; http:// or https://")
    )
    format: WebhookFormat = field(
        default="json",
        metadata=about(
            Choice(get_args(WebhookFormat)), "the body: syncd's JSON, or a chat message"
        ),
    )
    secret: Secret | None = field(
        default=None,
        repr=False,
        metadata=about(
            Credential(
                check=is_webhook_secret,
                refused="must be whsec_ followed by base64 (Standard Webhooks)",
            ),
            "a Standard Webhooks signing secret, whsec_ + base64; unset: alerts go unsigned",
        ),
    )
    events: frozenset[str] | None = field(
        default=None,
        metadata=about(
            Subset(tuple(e.value for e in Event), "event type"),
            "only these event types; unset: every event",
        ),
    )


@dataclass(frozen=True)
class ClusterConfig:
    """Several instances on one database: each provider's lease runs this long unless its
    holder renews it (every third of it)."""

    lease_ttl: timedelta = field(
        default=timedelta(seconds=30),
        metadata=about(
            Duration(LONGEST_LEASE, SHORTEST_LEASE),
            "an instance that stops renewing its lease is taken over after this long",
        ),
    )


@dataclass(frozen=True)
class MetricsConfig:
    """Where ``syncd run`` serves Prometheus metrics and ``/healthz``; off unless set."""

    listen: tuple[str, int] | None = field(
        default=None, metadata=about(HostPort(), "serve /metrics and /healthz here; unset: off")
    )
    public: bool = field(
        default=False,
        metadata=about(Flag(), "allow a non-loopback listen address (anyone there reads balances)"),
    )


def _exposure(metrics: MetricsConfig) -> Iterator[tuple[str, str]]:
    """Metrics name providers and show balances: a public address must be asked for."""
    if metrics.listen is not None and not metrics.public and not _is_loopback(metrics.listen[0]):
        yield (
            "listen",
            f"{metrics.listen[0]} is not a loopback address; set public = true to serve "
            "metrics there (anyone who reaches it reads balances and provider names)",
        )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Config:
    source: str  # the file it was read from; not a key
    database: DatabaseConfig = field(
        metadata=about(Table(DatabaseConfig, _password_fits), "where syncd keeps its state")
    )
    logging: LoggingConfig = field(metadata=about(Table(LoggingConfig), "what syncd logs"))
    providers: tuple[ProviderConfig, ...] = field(
        metadata=about(
            Tables(ProviderConfig, required=True), "one table per upstream panel; at least one"
        )
    )
    webhooks: tuple[WebhookConfig, ...] = field(
        default=(),
        metadata=about(Tables(WebhookConfig), "receivers of alerts; optional, one table each"),
    )
    cluster: ClusterConfig = field(
        default=ClusterConfig(),
        metadata=about(
            Table(ClusterConfig),
            "several `syncd run` sharing one database: one instance works on a provider at a time",
        ),
    )
    metrics: MetricsConfig = field(
        default=MetricsConfig(),
        metadata=about(
            Table(MetricsConfig, _exposure),
            "Prometheus metrics and a health check from `syncd run`; off unless listen is set",
        ),
    )

    def secrets(self) -> list[Secret]:
        found = [p.token for p in self.providers]
        found += [w.secret for w in self.webhooks if w.secret is not None]
        found += self.database.secrets()
        return found

    def select(self, provider: str | None) -> tuple[ProviderConfig, ...]:
        """The providers a command works on: all, or the one named by ``--provider``."""
        if provider is None:
            return self.providers
        for p in self.providers:
            if p.name == provider:
                return (p,)
        known = ", ".join(p.name for p in self.providers)
        raise UserError(f"unknown provider {provider!r} (configured: {known})")
