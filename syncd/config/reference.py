"""The configuration reference, generated from the schema so that it cannot drift from it.

Regenerate it after changing a setting in ``syncd/config/schema.py``::

    python -m syncd.config.reference > docs/configuration.md

A test fails while the file differs from what this prints.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

from syncd.config import DEFAULT_LOCATIONS
from syncd.config.credentials import Credential
from syncd.config.readers import Kind, Table, Tables, settings
from syncd.config.schema import Config

HEADER = """\
# Configuration reference

<!-- Generated from syncd/config/schema.py; do not edit by hand. Regenerate with
     python -m syncd.config.reference > docs/configuration.md -->

syncd reads one TOML file, the first found of: `--config PATH`, `$SYNCD_CONFIG`,
{locations}. `config.example.toml` is a commented example of every key.

- Durations are strings such as `"90s"`, `"2m"`, `"1h"`, `"30d"`, or sums (`"1h30m"`).
- Money is a decimal string (`"25.00"`), never a float.
- Unknown keys are errors, so a typo never silently falls back to a default.
- An invalid file is reported all at once, every problem with its key
  (`providers[0].timeout: ...`), and the process exits with status 2 without touching the
  database or the network. No message ever shows a token or a secret.
- A secret is given exactly one way: inline (`token`), in a file (`token_file`, where
  `${{VAR}}` such as systemd's `${{CREDENTIALS_DIRECTORY}}` is expanded) or in an environment
  variable named by `token_env`; `secret`, `secret_file`, `secret_env` likewise.
- The database password is never written inline: `password_file` or `password_env`, at
  most one of them, and only for a database that logs in with one (not SQLite).
"""

# A secret's three keys: (type, meaning) of the file and environment forms.
_ELSEWHERE = (
    ("path", "a file holding the `{name}` (`${{VAR}}` is expanded)"),
    ("variable name", "the environment variable holding the `{name}`"),
)


def render() -> str:
    """The whole of ``docs/configuration.md``."""
    locations = ", ".join(
        f"`./{p}`" if not p.is_absolute() else f"`{p}`" for p in DEFAULT_LOCATIONS
    )
    parts = [HEADER.format(locations=locations)]
    for f, s in settings(Config):
        assert isinstance(s.kind, Table | Tables), f"Config.{f.name} is not a table"
        header = f"[{f.name}]" if isinstance(s.kind, Table) else f"[[{f.name}]]"
        parts.append(f"\n## `{header}`\n\n{_sentence(s.doc)}\n\n")
        parts.append("| key | type | default | meaning |\n|---|---|---|---|\n")
        for g, t in settings(s.kind.cls):
            parts += [f"| {row} |\n" for row in _rows(g.name, t.kind, t.doc, g.default)]
    return "".join(parts)


def _rows(name: str, kind: Kind, doc: str, default: Any) -> list[str]:
    shown = _default(kind, default)
    if not isinstance(kind, Credential):
        return [f"`{name}` | {_type(kind)} | {shown} | {doc}"]
    if shown == "required":
        shown = "required: one of these three"
    rows = [f"`{name}` | {kind.describe()} | {shown} | {doc}"] if kind.inline else []
    elsewhere = kind.keys(name)[-len(_ELSEWHERE) :]
    for key, (what, meaning) in zip(elsewhere, _ELSEWHERE, strict=True):
        told = meaning.format(name=name) + ("" if kind.inline else f": {doc}")
        rows.append(f"`{key}` | {what} | {shown} | {told}")
    return rows


def _type(kind: Kind) -> str:
    options = kind.options()
    if not options:
        return kind.describe()
    listed = ", ".join(f"`{o}`" for o in options)
    return f"{kind.describe()}: {kind.pick} {listed}"


def _default(kind: Kind, default: Any) -> str:
    if default is dataclasses.MISSING:
        return "required"
    if default is None:
        return "not set"
    return f"`{kind.show(default)}`"


def _sentence(doc: str) -> str:
    return doc[0].upper() + doc[1:] + "."


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
