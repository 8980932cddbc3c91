"""Configuration: find the TOML file, validate every key, and report all problems at once.

Loading a config never touches the database or the network; a broken file raises one
``ConfigError`` listing every problem with its key (``providers[0].timeout: ...``).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, TypeVar

from syncd.errors import ConfigError, ConfigProblem, UserError
from syncd.models import Event
from syncd.provider.dialects import DIALECTS
from syncd.provider.urls import provider_url_problem, webhook_url_problem
from syncd.secret import Secret
from syncd.storage.urls import database_url_problem
from syncd.units import (
    LONGEST_DURATION,
    format_duration,
    parse_duration,
    parse_money,
    parse_percent,
    shown,
)

DEFAULT_LOCATIONS = (Path("syncd.toml"), Path("/etc/syncd/syncd.toml"))
LogFormat = Literal["auto", "json", "console"]
WebhookFormat = Literal["json", "slack", "discord"]

_NAME = re.compile(r"[a-z0-9_-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_LEVELS = ("debug", "info", "warning", "error")
T = TypeVar("T")


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = "sqlite:///syncd.db"
    # PostgreSQL: wake the submit job on NOTIFY as well as by its one-second poll. Off
    # behind a pooler in transaction mode (PgBouncer), where LISTEN does not work.
    notify: bool = True

    @property
    def listens(self) -> bool:
        """Whether a running syncd LISTENs for notifications (notify on, and a database
        that sends them: PostgreSQL)."""
        from syncd.storage.backends import backend_for_url  # noqa: PLC0415

        return self.notify and backend_for_url(self.url).notifies


@dataclass(frozen=True)
class LoggingConfig:
    format: LogFormat = "auto"
    level: str = "info"


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    url: str
    token: Secret = field(repr=False)
    dialect: str = "api_token"
    catalog_interval: timedelta = timedelta(hours=1)
    orders_interval: timedelta = timedelta(minutes=2)
    balance_interval: timedelta = timedelta(minutes=10)
    status_batch_size: int = 100
    max_concurrency: int = 4
    timeout: timedelta = timedelta(seconds=30)
    low_balance: Decimal | None = None
    give_up_after: timedelta = timedelta(days=30)
    requests_per_minute: int | None = None  # None: as fast as max_concurrency allows
    # Percent above an order's quoted rate at which it is held instead of sent; None: off.
    price_guard: Decimal | None = None


@dataclass(frozen=True)
class WebhookConfig:
    name: str
    url: str
    format: WebhookFormat = "json"
    secret: Secret | None = field(default=None, repr=False)
    events: frozenset[str] | None = None  # None: every event


@dataclass(frozen=True)
class ClusterConfig:
    """Several instances on one database: each provider's lease runs this long unless its
    holder renews it (every third of it)."""

    lease_ttl: timedelta = timedelta(seconds=30)


@dataclass(frozen=True)
class MetricsConfig:
    """Where ``syncd run`` serves Prometheus metrics and ``/healthz``; off unless set."""

    listen: tuple[str, int] | None = None  # (host, port)
    public: bool = False  # a non-loopback address must be asked for by name


@dataclass(frozen=True)
class Config:
    source: str
    database: DatabaseConfig
    logging: LoggingConfig
    providers: tuple[ProviderConfig, ...]
    webhooks: tuple[WebhookConfig, ...] = ()
    cluster: ClusterConfig = ClusterConfig()
    metrics: MetricsConfig = MetricsConfig()

    def secrets(self) -> list[Secret]:
        found = [p.token for p in self.providers]
        found += [w.secret for w in self.webhooks if w.secret is not None]
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


def find_config(explicit: str | None, environ: Mapping[str, str]) -> Path:
    """Apply the lookup order: ``--config``, ``$SYNCD_CONFIG``, ``./syncd.toml``, ``/etc``."""
    for given, origin in ((explicit, "--config"), (environ.get("SYNCD_CONFIG"), "SYNCD_CONFIG")):
        if given:
            path = Path(given)
            if not path.exists():
                raise UserError(f"config file {given} (from {origin}) does not exist")
            if not path.is_file():
                raise UserError(f"config file {given} (from {origin}) is not a file")
            return path
    for path in DEFAULT_LOCATIONS:
        if path.is_file():
            return path
    raise UserError(
        "no config file: pass --config PATH, set SYNCD_CONFIG, or create ./syncd.toml "
        "or /etc/syncd/syncd.toml (see config.example.toml)"
    )


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Config:
    env = os.environ if environ is None else environ
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read config {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [ConfigProblem("(file)", f"not valid TOML: {exc}")]) from None
    return parse_config(raw, source=str(path), environ=env)


def parse_config(raw: Mapping[str, Any], *, source: str, environ: Mapping[str, str]) -> Config:
    reader = _Reader(environ)
    config = reader.config(raw, source)
    if reader.problems:
        raise ConfigError(source, reader.problems)
    return config


class _Reader:
    """Reads one table at a time, recording problems instead of stopping at the first."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[ConfigProblem] = []

    def problem(self, key: str, message: str) -> None:
        self.problems.append(ConfigProblem(key, message))

    def config(self, raw: Mapping[str, Any], source: str) -> Config:
        self.unknown_keys(
            raw, "", {"database", "logging", "providers", "webhooks", "cluster", "metrics"}
        )
        database = self.database(self.table(raw, "database"))
        logging = self.logging(self.table(raw, "logging"))
        cluster = self.cluster(self.table(raw, "cluster"))
        metrics = self.metrics(self.table(raw, "metrics"))
        providers = tuple(
            p
            for i, t in enumerate(self.array(raw, "providers"))
            if (p := self.provider(t, f"providers[{i}]")) is not None
        )
        if not raw.get("providers"):
            self.problem("providers", "at least one [[providers]] table is required")
        webhooks = tuple(
            w
            for i, t in enumerate(self.array(raw, "webhooks"))
            if (w := self.webhook(t, f"webhooks[{i}]")) is not None
        )
        # Names straight from the tables: a duplicate is reported even beside other problems.
        self.unique(raw.get("providers"), "providers")
        self.unique(raw.get("webhooks"), "webhooks")
        return Config(source, database, logging, providers, webhooks, cluster, metrics)

    # -- tables --------------------------------------------------------------------------

    def cluster(self, t: Mapping[str, Any]) -> ClusterConfig:
        self.unknown_keys(t, "cluster", {"lease_ttl"})
        ttl = self.duration(t, "cluster", "lease_ttl", ClusterConfig.lease_ttl)
        if ttl < SHORTEST_LEASE:
            # Renewed every third of it: a shorter lease is lost to one slow transaction.
            self.problem("cluster.lease_ttl", f"must be at least {format_duration(SHORTEST_LEASE)}")
            ttl = ClusterConfig.lease_ttl
        return ClusterConfig(ttl)

    def metrics(self, t: Mapping[str, Any]) -> MetricsConfig:
        self.unknown_keys(t, "metrics", {"listen", "public"})
        public = self.value(t, "metrics.public", "public", bool, False)
        text = self.value(t, "metrics.listen", "listen", str, None)
        if text is None:
            return MetricsConfig(None, public)
        host, _, port_text = text.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not host or not (port_text.isascii() and port_text.isdigit()):
            self.problem("metrics.listen", f"not host:port: {shown(text)}")
            return MetricsConfig(None, public)
        port = int(port_text)
        if not 0 < port < 65536:
            self.problem("metrics.listen", f"port must be 1..65535, not {port}")
            return MetricsConfig(None, public)
        if not public and not _is_loopback(host):
            self.problem(
                "metrics.listen",
                f"{host} is not a loopback address; set public = true to serve metrics there "
                "(anyone who reaches it reads balances and provider names)",
            )
            return MetricsConfig(None, public)
        return MetricsConfig((host, port), public)

    def database(self, t: Mapping[str, Any]) -> DatabaseConfig:
        self.unknown_keys(t, "database", {"url", "notify"})
        url = self.value(t, "database.url", "url", str, DatabaseConfig.url)
        if (why := database_url_problem(url)) is not None:
            self.problem("database.url", why)
        notify = self.value(t, "database.notify", "notify", bool, DatabaseConfig.notify)
        return DatabaseConfig(url, notify)

    def logging(self, t: Mapping[str, Any]) -> LoggingConfig:
        self.unknown_keys(t, "logging", {"format", "level"})
        fmt = self.choice(t, "logging.format", "format", ("auto", "json", "console"), "auto")
        level = self.choice(t, "logging.level", "level", _LEVELS, "info")
        return LoggingConfig(fmt, level)  # type: ignore[arg-type]  # choice() checked it

    def provider(self, t: Mapping[str, Any], at: str) -> ProviderConfig | None:
        d = ProviderConfig
        self.unknown_keys(
            t,
            at,
            {
                "name", "url", "token", "token_file", "token_env", "dialect",
                "catalog_interval", "orders_interval", "balance_interval",
                "status_batch_size", "max_concurrency", "timeout", "low_balance",
                "give_up_after", "requests_per_minute", "price_guard",
            },
        )  # fmt: skip
        before = len(self.problems)
        name = self.name(t, at)
        url = self.value(t, f"{at}.url", "url", str, None)
        if url is not None and (why := provider_url_problem(url)) is not None:
            self.problem(f"{at}.url", why)
        token = self.credential(t, at, "token", required=True)
        dialect = self.choice(t, f"{at}.dialect", "dialect", tuple(DIALECTS), d.dialect)
        batch = self.integer(
            t, f"{at}.status_batch_size", "status_batch_size", low=1, high=100, default=100
        )
        concurrency = self.integer(
            t, f"{at}.max_concurrency", "max_concurrency", low=1, high=64, default=4
        )
        per_minute = self.value(t, f"{at}.requests_per_minute", "requests_per_minute", int, 0)
        if not 0 <= per_minute <= 60_000 or ("requests_per_minute" in t and per_minute == 0):
            if type(t.get("requests_per_minute")) is int:  # else its type was reported
                self.problem(
                    f"{at}.requests_per_minute", f"must be between 1 and 60000 (got {per_minute})"
                )
            per_minute = 0
        guard = self.parsed(t, f"{at}.price_guard", "price_guard", parse_percent, None)
        low = self.parsed(t, f"{at}.low_balance", "low_balance", parse_money, None)
        if low is not None and low < 0:
            self.problem(f"{at}.low_balance", "must not be negative")
        config = ProviderConfig(
            name=name or "",
            url=url or "",
            token=token or Secret(""),
            dialect=dialect,
            catalog_interval=self.duration(t, at, "catalog_interval", d.catalog_interval),
            orders_interval=self.duration(t, at, "orders_interval", d.orders_interval),
            balance_interval=self.duration(t, at, "balance_interval", d.balance_interval),
            status_batch_size=batch,
            max_concurrency=concurrency,
            timeout=self.duration(t, at, "timeout", d.timeout),
            low_balance=low,
            give_up_after=self.duration(t, at, "give_up_after", d.give_up_after),
            requests_per_minute=per_minute or None,
            price_guard=guard,
        )
        if url is None:
            self.problem(f"{at}.url", "is required")
        return config if len(self.problems) == before else None

    def webhook(self, t: Mapping[str, Any], at: str) -> WebhookConfig | None:
        self.unknown_keys(
            t, at, {"name", "url", "format", "secret", "secret_file", "secret_env", "events"}
        )
        before = len(self.problems)
        name = self.name(t, at)
        url = self.value(t, f"{at}.url", "url", str, None)
        if url is None:
            self.problem(f"{at}.url", "is required")
        elif (why := webhook_url_problem(url)) is not None:
            self.problem(f"{at}.url", why)
        fmt = self.choice(t, f"{at}.format", "format", ("json", "slack", "discord"), "json")
        secret = self.credential(t, at, "secret", required=False)
        if secret is not None and not _is_webhook_secret(secret.reveal()):
            given = next(k for k in ("secret", "secret_file", "secret_env") if k in t)
            self.problem(f"{at}.{given}", "must be whsec_ followed by base64 (Standard Webhooks)")
        events = self.events(t, f"{at}.events")
        if len(self.problems) != before:
            return None
        return WebhookConfig(name or "", url or "", fmt, secret, events)  # type: ignore[arg-type]

    # -- values --------------------------------------------------------------------------

    def table(self, raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = raw.get(key, {})
        if not isinstance(value, dict):
            self.problem(key, "must be a table")
            return {}
        return value

    def array(self, raw: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
        value = raw.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            self.problem(key, f"must be an array of tables ([[{key}]])")
            return []
        return value

    def unknown_keys(self, t: Mapping[str, Any], at: str, known: set[str]) -> None:
        for key in sorted(set(t) - known):
            self.problem(f"{at}.{key}" if at else key, "unknown key")

    def value(self, t: Mapping[str, Any], key: str, name: str, kind: type[T], default: T) -> T:
        if name not in t:
            return default
        value = t[name]
        if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
            self.problem(key, f"must be {_KIND_NAMES.get(kind, kind.__name__)}")
            return default
        return value

    def choice(
        self, t: Mapping[str, Any], key: str, name: str, allowed: tuple[str, ...], default: str
    ) -> str:
        value = self.value(t, key, name, str, default)
        if value not in allowed:
            self.problem(key, f"must be one of {', '.join(allowed)} (got {value!r})")
            return default
        return value

    def integer(
        self, t: Mapping[str, Any], key: str, name: str, *, low: int, high: int, default: int
    ) -> int:
        value = self.value(t, key, name, int, default)
        if not low <= value <= high:
            self.problem(key, f"must be between {low} and {high} (got {value})")
            return default
        return value

    def parsed(
        self,
        t: Mapping[str, Any],
        key: str,
        name: str,
        parse: Callable[[str], T],
        default: T,
    ) -> T:
        text = self.value(t, key, name, str, None)
        if text is None:
            return default
        try:
            return parse(text)
        except ValueError as exc:
            self.problem(key, str(exc))
            return default

    def duration(self, t: Mapping[str, Any], at: str, name: str, default: timedelta) -> timedelta:
        longest = _LONGEST.get(name, LONGEST_DURATION)
        return self.parsed(
            t, f"{at}.{name}", name, lambda text: parse_duration(text, longest=longest), default
        )

    def name(self, t: Mapping[str, Any], at: str) -> str | None:
        if "name" not in t:
            self.problem(f"{at}.name", "is required")
            return None
        name = self.value(t, f"{at}.name", "name", str, None)
        if name is None:
            pass  # value() reported the wrong type
        elif not _NAME.fullmatch(name):
            self.problem(f"{at}.name", f"must match [a-z0-9_-]+ (got {shown(name)})")
        elif len(name) > LONGEST_NAME:
            self.problem(f"{at}.name", f"must be at most {LONGEST_NAME} characters")
        return name

    def unique(self, tables: object, key: str) -> None:
        if not isinstance(tables, list):
            return
        names = [t.get("name") for t in tables if isinstance(t, dict)]
        for name in sorted({n for n in names if isinstance(n, str) and names.count(n) > 1}):
            self.problem(key, f"name {name!r} is used more than once")

    def events(self, t: Mapping[str, Any], key: str) -> frozenset[str] | None:
        if "events" not in t:
            return None
        events = t["events"]
        if not isinstance(events, list) or not all(isinstance(e, str) for e in events):
            self.problem(key, "must be a list of event type strings")
            return None
        known = {e.value for e in Event}
        for event in events:
            if event not in known:
                self.problem(key, f"unknown event type {event!r}")
        return frozenset(events)

    def credential(
        self, t: Mapping[str, Any], at: str, what: str, *, required: bool
    ) -> Secret | None:
        """Read exactly one of ``what``, ``what_file``, ``what_env``; never echo the value."""
        given = [k for k in (what, f"{what}_file", f"{what}_env") if k in t]
        if len(given) > 1:
            self.problem(f"{at}.{what}", f"set exactly one of {', '.join(given)}")
            return None
        if not given:
            if required:
                self.problem(
                    f"{at}.{what}", f"one of {what}, {what}_file or {what}_env is required"
                )
            return None
        key = given[0]
        value = self.value(t, f"{at}.{key}", key, str, None)
        if value is None:
            return None
        if key == what:
            text: str | None = value
        elif key.endswith("_env"):
            if not _ENV_NAME.fullmatch(value):
                # Never echo it: a token pasted here by mistake would end up in the output.
                self.problem(f"{at}.{key}", "must be the name of an environment variable")
                return None
            text = self.environ.get(value)
            if text is None:
                self.problem(f"{at}.{key}", f"environment variable {value} is not set")
        else:
            text = self.read_secret_file(f"{at}.{key}", value)
        if text is None:
            return None
        text = text.strip()
        if not text:
            self.problem(f"{at}.{key}", f"the {what} is empty")
            return None
        if what == "token" and len(text) < SHORTEST_TOKEN:
            # Never echo it. Panels issue tokens of 32 characters and more; a shorter one
            # is a wrong value, and redacting it from every log line would hide too much.
            self.problem(
                f"{at}.{key}",
                f"the token has {len(text)} characters, fewer than the {SHORTEST_TOKEN} any "
                "panel's token has: is it the right value?",
            )
            return None
        return Secret(text)

    def read_secret_file(self, key: str, path: str) -> str | None:
        expanded = self.expand(key, path)
        if expanded is None:
            return None
        try:
            return Path(expanded).read_text(encoding="utf-8")
        except OSError as exc:
            self.problem(key, f"cannot read {expanded}: {exc.strerror}")
        except UnicodeDecodeError:
            self.problem(key, f"{expanded} is not UTF-8 text")
        return None

    def expand(self, key: str, path: str) -> str | None:
        """Expand ``${VAR}`` (typically systemd's ``${CREDENTIALS_DIRECTORY}``)."""
        missing = [v for v in _VAR.findall(path) if v not in self.environ]
        if missing:
            hint = (
                " (set by systemd with LoadCredential=)"
                if "CREDENTIALS_DIRECTORY" in missing
                else ""
            )
            self.problem(key, f"environment variable {missing[0]} is not set{hint}")
            return None
        return _VAR.sub(lambda m: self.environ[m.group(1)], path)


LONGEST_NAME = 64  # a provider's or webhook's name; a consumer row's longer one is cut short

_KIND_NAMES = {str: "a string", int: "an integer", bool: "a boolean"}
# The longest value of each duration that still makes sense (the rest: ten years). A
# request that takes over an hour is a provider that is down; a job that runs less than
# monthly is not being synced.
LONGEST_TIMEOUT = timedelta(hours=1)
SHORTEST_LEASE = timedelta(seconds=6)
SHORTEST_TOKEN = 8
_LONGEST = {
    "timeout": LONGEST_TIMEOUT,
    "lease_ttl": timedelta(minutes=10),
    "catalog_interval": timedelta(days=30),
    "orders_interval": timedelta(days=30),
    "balance_interval": timedelta(days=30),
}


def _is_webhook_secret(value: str) -> bool:
    if not value.startswith("whsec_"):
        return False
    try:
        return len(base64.b64decode(value.removeprefix("whsec_"), validate=True)) > 0
    except (binascii.Error, ValueError):
        return False


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
