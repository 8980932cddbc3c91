"""Generic readers of TOML values, and the walk that reads a config dataclass with them.

Each field of a config dataclass carries a ``Setting`` in its metadata: the ``Kind`` of
value it holds (a duration, money, a secret...) and one line saying what it means. That
field is then the only place a key is written: ``read_table`` derives the known keys, the
defaults and the required keys from ``dataclasses.fields``, and the configuration
reference is generated from the same settings.

A reader never stops at the first problem: it records it on its key (``providers[0].timeout``)
and returns ``None``; ``read_table`` then returns ``None`` for the whole table, so a broken
table is never half-built and every problem of the file is reported at once. No reader
ever quotes a secret it read.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from functools import partial
from typing import Any, ClassVar, Generic, TypeVar

from syncd.errors import ConfigProblem
from syncd.units import LONGEST_DURATION, format_duration, parse_duration, parse_money, shown

T = TypeVar("T")
C = TypeVar("C")

SETTING = "syncd.setting"  # the key of a field's metadata that holds its Setting

_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean"}


def join(at: str, name: str) -> str:
    """The key a problem is reported on: ``providers[0]`` + ``timeout``."""
    return f"{at}.{name}" if at else name


class Reader:
    """What every kind reads with: the environment for secrets, and the problems so far."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self.environ = environ
        self.problems: list[ConfigProblem] = []

    def problem(self, key: str, message: str) -> None:
        self.problems.append(ConfigProblem(key, message))

    def typed(self, t: Mapping[str, Any], key: str, name: str, kind: type[T]) -> T | None:
        """``t[name]`` if it is of TOML type ``kind`` (a bool is no integer), else ``None``."""
        value = t[name]
        if not isinstance(value, kind) or isinstance(value, bool) != (kind is bool):
            self.problem(key, f"must be {_TYPE_NAMES.get(kind, kind.__name__)}")
            return None
        return value


class Kind:
    """How one setting is read from its table, and how the reference describes it."""

    what: ClassVar[str] = "value"  # the type, as the reference names it
    pick: ClassVar[str] = "one of"  # how the reference introduces the options

    def describe(self) -> str:
        return self.what

    def options(self) -> tuple[str, ...]:
        """The values allowed, when they are a closed list."""
        return ()

    def keys(self, name: str) -> tuple[str, ...]:
        """The TOML keys this setting may be written under (a secret has three)."""
        return (name,)

    def read(self, r: Reader, t: Mapping[str, Any], at: str, name: str) -> Any:
        """The value of a setting present in ``t``; ``None`` after recording a problem."""
        raise NotImplementedError

    def absent(self, r: Reader, at: str, name: str, default: Any) -> Any:
        """The value of a setting the table leaves out: its default, if it has one."""
        if default is dataclasses.MISSING:
            r.problem(join(at, name), "is required")
            return None
        return default

    def show(self, value: Any) -> str:
        """A default as it would be written in TOML."""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value) if isinstance(value, int) else f'"{value}"'


@dataclass(frozen=True)
class Setting:
    kind: Kind
    doc: str  # one line: what the key means, for the reference


def about(kind: Kind, doc: str) -> dict[str, Setting]:
    """Field metadata for a setting: ``field(default=..., metadata=about(kind, doc))``."""
    return {SETTING: Setting(kind, doc)}


def settings(cls: type[Any]) -> list[tuple[dataclasses.Field[Any], Setting]]:
    """The fields of a config dataclass that are read from TOML, in order."""
    return [(f, f.metadata[SETTING]) for f in dataclasses.fields(cls) if SETTING in f.metadata]


def known_keys(cls: type[Any]) -> list[str]:
    return [key for f, s in settings(cls) for key in s.kind.keys(f.name)]


def read_table(r: Reader, cls: type[C], t: Mapping[str, Any], at: str, **given: Any) -> C | None:
    """Read every setting of ``cls`` from ``t``; ``given`` fills fields read from elsewhere."""
    for key in sorted(set(t) - set(known_keys(cls))):
        r.problem(join(at, key), "unknown key")
    before = len(r.problems)
    values = dict(given)
    for f, s in settings(cls):
        if any(key in t for key in s.kind.keys(f.name)):
            values[f.name] = s.kind.read(r, t, at, f.name)
        else:
            values[f.name] = s.kind.absent(r, at, f.name, f.default)
    return cls(**values) if len(r.problems) == before else None


# -- plain values ------------------------------------------------------------------------


@dataclass(frozen=True)
class Text(Kind):
    """A string, judged by ``check`` (which returns why it is refused, or ``None``)."""

    check: Callable[[str], str | None] | None = None
    shape: str = "string"  # what the reference says it looks like

    def describe(self) -> str:
        return self.shape

    def read(self, r: Reader, t: Mapping[str, Any], at: str, name: str) -> str | None:
        key = join(at, name)
        text = r.typed(t, key, name, str)
        if text is not None and self.check is not None and (why := self.check(text)):
            r.problem(key, why)
        return text


@dataclass(frozen=True)
class Flag(Kind):
    what = "boolean"

    def read(self, r: Reader, t: Mapping[str, Any], at: str, name: str) -> bool | None:
        return r.typed(t, join(at, name), name, bool)


@dataclass(frozen=True)
class Integer(Kind):
    low: int
    high: int

    def describe(self) -> str:
        return f"integer, {self.low}..{self.high}"

    def read(self, r: Reader, t: Mapping[str, Any], at: str, name: str) -> int | None:
        key = join(at, name)
        value = r.typed(t, key, name, int)
        if value is not None and not self.low <= value <= self.high:
            r.problem(key, f"must be between {self.low} and {self.high} (got {value})")
            return None
        return value


@dataclass(frozen=True)
class Choice(Kind):
    """One of a closed list of strings (typically ``typing.get_args`` of a ``Literal``)."""

    choices: tuple[str, ...]
    what = "string"

    def options(self) -> tuple[str, ...]:
        return self.choices

    def read(self, r: Reader, t: Mapping[str, Any], at: str, name: str) -> str | None:
        key = join(at, name)
        value = r.typed(t, key, name, str)
        if value is not None and value not in self.choices:
            r.problem(key, f"must be one of {', '.join(self.choices)} (got {value!r})")
            return None
        return value


@dataclass(frozen=True)
class Duration(Kind):
    """A duration written ``"90s"``, ``"2m"``, ``"1h30m"``, ``"30d"``, within bounds."""

    longest: timedelta = LONGEST_DURATION
    shortest: timedelta | None = None

    def describe(self) -> str:
        low = f"at least {format_duration(self.shortest)}, " if self.shortest else ""
        return f"duration, {low}at most {format_duration(self.longest)}"

    def read(self, r: Reader, t: Mapping[str, Any], at: str, name: str) -> timedelta | None:
        key = join(at, name)
        span = Parsed(partial(parse_duration, longest=self.longest)).read(r, t, at, name)
        if span is not None and self.shortest is not None and span < self.shortest:
            r.problem(key, f"must be at least {format_duration(self.shortest)}")
            return None
        return span

    def show(self, value: Any) -> str:
        return f'"{format_duration(value)}"'


@dataclass(frozen=True)
class Parsed(Kind, Generic[T]):
    """A string turned into a value by ``parse``, whose ``ValueError`` says what is wrong."""

    parse: Callable[[str], T]
    kind: str = "string"

    def describe(self) -> str:
        return self.kind

    def read(self, r: Reader, t: Mapping[str, Any], at: str, name: str) -> T | None:
        key = join(at, name)
        text = r.typed(t, key, name, str)
        if text is None:
            return None
        try:
            return self.parse(text)
        except ValueError as exc:
            r.problem(key, str(exc))
            return None


def amount(text: str) -> Decimal:
    """Money that is not negative: a threshold or limit, never a debt."""
    value = parse_money(text)
    if value < 0:
        raise ValueError("must not be negative")
    return value


@dataclass(frozen=True)
class Subset(Kind):
    """A list of strings, each one of ``choices``."""

    choices: tuple[str, ...]
    noun: str  # what one of them is called in a message
    pick = "any of"

    def describe(self) -> str:
        return f"list of {self.noun}s"

    def options(self) -> tuple[str, ...]:
        return self.choices

    def read(self, r: Reader, t: Mapping[str, Any], at: str, name: str) -> frozenset[str] | None:
        key = join(at, name)
        values = t[name]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            r.problem(key, f"must be a list of {self.noun} strings")
            return None
        unknown = [v for v in values if v not in self.choices]
        for value in unknown:
            r.problem(key, f"unknown {self.noun} {value!r}")
        return None if unknown else frozenset(values)


@dataclass(frozen=True)
class HostPort(Kind):
    """An address to listen on, ``host:port`` (an IPv6 host in brackets)."""

    what = "host:port"

    def read(self, r: Reader, t: Mapping[str, Any], at: str, name: str) -> tuple[str, int] | None:
        key = join(at, name)
        text = r.typed(t, key, name, str)
        if text is None:
            return None
        host, _, port_text = text.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not host or not (port_text.isascii() and port_text.isdigit()):
            r.problem(key, f"not host:port: {shown(text)}")
            return None
        port = int(port_text)
        if not 0 < port < 65536:
            r.problem(key, f"port must be 1..65535, not {port}")
            return None
        return (host, port)


# -- tables ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Table(Kind, Generic[C]):
    """A ``[section]`` read into ``cls``; left out, it is every default. ``check`` judges
    settings together once each is valid, returning (key, problem) pairs."""

    cls: type[C]
    check: Callable[[C], Iterable[tuple[str, str]]] | None = None
    what = "table"

    def read(self, r: Reader, t: Mapping[str, Any], at: str, name: str) -> C | None:
        key = join(at, name)
        table = t[name]
        if not isinstance(table, dict):
            r.problem(key, "must be a table")
            return None
        config = read_table(r, self.cls, table, key)
        if config is None or self.check is None:
            return config
        problems = list(self.check(config))
        for setting_key, message in problems:
            r.problem(join(key, setting_key), message)
        return None if problems else config

    def absent(self, r: Reader, at: str, name: str, default: Any) -> C | None:
        return self.read(r, {name: {}}, at, name)


@dataclass(frozen=True)
class Tables(Kind, Generic[C]):
    """An array of ``[[section]]`` tables read into ``cls``, each with a unique ``name``."""

    cls: type[C]
    required: bool = False  # at least one table
    what = "array of tables"

    def read(self, r: Reader, t: Mapping[str, Any], at: str, name: str) -> tuple[C, ...] | None:
        key = join(at, name)
        tables = t[name]
        if not isinstance(tables, list) or not all(isinstance(v, dict) for v in tables):
            r.problem(key, f"must be an array of tables ([[{key}]])")
            return None
        if not tables:
            return self.absent(r, at, name, ())
        read = [read_table(r, self.cls, v, f"{key}[{i}]") for i, v in enumerate(tables)]
        # Names straight from the tables: a duplicate is reported beside other problems.
        names = [v.get("name") for v in tables]
        for dup in sorted({n for n in names if isinstance(n, str) and names.count(n) > 1}):
            r.problem(key, f"name {dup!r} is used more than once")
        return tuple(c for c in read if c is not None)

    def absent(self, r: Reader, at: str, name: str, default: Any) -> tuple[C, ...]:
        if self.required:
            r.problem(join(at, name), f"at least one [[{join(at, name)}]] table is required")
        return ()
