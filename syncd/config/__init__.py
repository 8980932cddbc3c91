"""Configuration: find the TOML file, validate every key, and report all problems at once.

Loading a config never touches the database or the network; a broken file raises one
``ConfigError`` listing every problem with its key (``providers[0].timeout: ...``).

- ``schema``: the dataclasses, one per table, each key written once with its meaning;
- ``readers``: how a value of each kind is read (durations, money, names...), and the walk
  that reads a dataclass's fields with them;
- ``credentials``: secrets, inline, in a file or in an environment variable;
- ``reference``: ``python -m syncd.config.reference`` prints ``docs/configuration.md``.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from syncd.config.readers import Reader, read_table
from syncd.config.schema import (
    LONGEST_NAME,
    SHORTEST_LEASE,
    SHORTEST_TOKEN,
    ClusterConfig,
    Config,
    DatabaseConfig,
    LogFormat,
    LoggingConfig,
    LogLevel,
    MetricsConfig,
    ProviderConfig,
    WebhookConfig,
    WebhookFormat,
)
from syncd.deadlines import LONGEST_TIMEOUT
from syncd.errors import ConfigError, ConfigProblem, UserError
from syncd.secret import Scrubber, Secret

__all__ = [
    "DEFAULT_LOCATIONS",
    "LONGEST_NAME",
    "LONGEST_TIMEOUT",
    "SHORTEST_LEASE",
    "SHORTEST_TOKEN",
    "ClusterConfig",
    "Config",
    "DatabaseConfig",
    "LogFormat",
    "LogLevel",
    "LoggingConfig",
    "MetricsConfig",
    "ProviderConfig",
    "WebhookConfig",
    "WebhookFormat",
    "find_config",
    "load_config",
    "parse_config",
]

DEFAULT_LOCATIONS = (Path("syncd.toml"), Path("/etc/syncd/syncd.toml"))


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
    reader = Reader(environ)
    config = read_table(reader, Config, raw, "", source=source)
    if reader.problems or config is None:
        # A token or webhook secret may turn up in another key's problem (pasted into
        # `dialect`, say): every problem is told without any spelling of one.
        scrubber = Scrubber(Secret(value) for value in _secrets_in(raw))
        problems = [
            ConfigProblem(scrubber.scrub(p.key), scrubber.scrub(p.message)) for p in reader.problems
        ]
        raise ConfigError(source, problems)
    return config


def _secrets_in(raw: object, key: str = "") -> Iterator[str]:
    """The values a config file gives as secrets: every ``token`` and ``secret``, and any
    string that has the form of a webhook secret, wherever it stands."""
    if isinstance(raw, Mapping):
        for name, value in raw.items():
            yield from _secrets_in(value, str(name))
    elif isinstance(raw, list):
        for value in raw:
            yield from _secrets_in(value, key)
    elif isinstance(raw, str) and (key in ("token", "secret") or raw.startswith("whsec_")):
        yield raw
