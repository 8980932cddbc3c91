"""Secrets in a config: a provider's token, a webhook's signing secret, the database password.

Each may be written inline, in a file or in an environment variable, and no message
about one ever quotes its value: a token pasted into the wrong key must not end up in a
terminal, a log or a bug report.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from syncd.config.readers import Kind, Reader, join
from syncd.secret import Secret

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Credential(Kind):
    """A secret written inline (``token``), in a file (``token_file``, where ``${VAR}`` such
    as systemd's ``${CREDENTIALS_DIRECTORY}`` is expanded) or in an environment variable
    (``token_env``): exactly one of the three. No message ever quotes the value.

    A password (``inline=False``) is never written inline, only in a file or a variable,
    and at most one of the two: a config file is read by more people than a credential.
    It is taken as written (``exact``): a space may be part of it, and only the line end
    a file's last line carries is taken off."""

    shortest: int = 1  # fewer characters is a wrong value, not a secret
    check: Callable[[str], bool] | None = None
    refused: str = ""  # the message when ``check`` refuses the value
    inline: bool = True
    exact: bool = False
    what = "secret"

    def keys(self, name: str) -> tuple[str, ...]:
        elsewhere = (f"{name}_file", f"{name}_env")
        return (name, *elsewhere) if self.inline else elsewhere

    def absent(self, r: Reader, at: str, name: str, default: Any) -> Any:
        if default is dataclasses.MISSING:
            *some, last = self.keys(name)
            r.problem(join(at, name), f"one of {', '.join(some)} or {last} is required")
        return None

    def read(self, r: Reader, t: Mapping[str, Any], at: str, name: str) -> Secret | None:
        given = [k for k in self.keys(name) if k in t]
        if len(given) > 1:
            how_many = "exactly" if self.inline else "at most"
            r.problem(join(at, name), f"set {how_many} one of {', '.join(given)}")
            return None
        (source,) = given
        key = join(at, source)
        value = r.typed(t, key, source, str)
        if value is None:
            return None
        if source == name:
            text: str | None = value
        elif source.endswith("_env"):
            text = _from_environment(r, key, value)
        else:
            text = _from_file(r, key, value)
        if text is None:
            return None
        if not self.exact:
            text = text.strip()
        elif source.endswith("_file"):
            text = text.removesuffix("\n").removesuffix("\r")
        if not text:
            r.problem(key, f"the {name} is empty")
            return None
        if len(text) < self.shortest:
            # Never echo it: a value this short is a wrong one, and redacting it from
            # every log line would hide too much.
            r.problem(
                key,
                f"the {name} has {len(text)} characters, fewer than the {self.shortest} any "
                f"panel's {name} has: is it the right value?",
            )
            return None
        if self.check is not None and not self.check(text):
            r.problem(key, self.refused)
            return None
        return Secret(text)


def _from_environment(r: Reader, key: str, variable: str) -> str | None:
    if not _ENV_NAME.fullmatch(variable):
        # Never echo it: a token pasted here by mistake would end up in the output.
        r.problem(key, "must be the name of an environment variable")
        return None
    text = r.environ.get(variable)
    if text is None:
        r.problem(key, f"environment variable {variable} is not set")
    return text


def _from_file(r: Reader, key: str, path: str) -> str | None:
    missing = [v for v in _VAR.findall(path) if v not in r.environ]
    if missing:
        hint = (
            " (set by systemd with LoadCredential=)" if "CREDENTIALS_DIRECTORY" in missing else ""
        )
        r.problem(key, f"environment variable {missing[0]} is not set{hint}")
        return None
    expanded = _VAR.sub(lambda m: r.environ[m.group(1)], path)
    try:
        return Path(expanded).read_text(encoding="utf-8")
    except OSError as exc:
        r.problem(key, f"cannot read {expanded}: {exc.strerror}")
    except UnicodeDecodeError:
        r.problem(key, f"{expanded} is not UTF-8 text")
    return None


def is_webhook_secret(value: str) -> bool:
    """A Standard Webhooks secret: ``whsec_`` and base64 of at least one byte."""
    if not value.startswith("whsec_"):
        return False
    try:
        return len(base64.b64decode(value.removeprefix("whsec_"), validate=True)) > 0
    except (binascii.Error, ValueError):
        return False
