"""Database URLs, read without SQLAlchemy where their form is plain.

Every command checks ``database.url`` when it loads the config, and ``syncd status`` reads
the database through its driver alone: neither may pay for importing SQLAlchemy (nearly
half a second) to learn what ``sqlite:///syncd.db`` means. The two plain forms syncd
documents, ``sqlite:///PATH`` and ``postgresql+psycopg://...``, are read here; any other
URL is judged by SQLAlchemy itself, so every message about a bad URL stays SQLAlchemy's.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

# No query: its parameters are SQLAlchemy's to interpret.
_SQLITE = re.compile(r"sqlite(?:\+pysqlite)?:///(?P<database>[^?]*)")
# SQLAlchemy's URL grammar for this one driver: [user[:password]@][host][:port][/db][?query].
_POSTGRES = re.compile(
    r"postgresql\+psycopg://(?:[^:/]*(?::[^@]*)?@)?(?:\[[^/?]+\]|[^/:?]+)?"
    r"(?::(?P<port>[^/?]*))?(?:/[^?]*)?(?:\?[^\n]*)?"
)


def database_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be used as a database URL, or ``None``. Opens no connection."""
    if _SQLITE.fullmatch(url) is not None or _plain_postgres(url):
        return None
    import sqlalchemy as sa  # noqa: PLC0415 - only for a URL of another form
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError  # noqa: PLC0415

    from syncd.storage.engine import parsed_safe  # noqa: PLC0415

    try:
        parsed = sa.engine.make_url(url)
        parsed.get_dialect().import_dbapi()
    except (ArgumentError, ValueError):  # ValueError: e.g. a port that is not a number
        return f"not a database URL: {parsed_safe(url)!r}"
    except NoSuchModuleError:
        return f"unknown database kind in {parsed_safe(url)!r}"
    except ImportError as exc:
        driver = exc.name or "?"
        hint = " (pip install 'syncd[postgres]')" if url.startswith("postgres") else ""
        return f"database driver {driver} is not installed{hint}"
    return None


def _plain_postgres(url: str) -> bool:
    """A PostgreSQL URL SQLAlchemy surely accepts: of the plain form, and its driver
    imports (SQLAlchemy checks that too)."""
    if not is_plain_postgres(url):
        return False
    try:
        import psycopg  # noqa: F401, PLC0415
    except ImportError:
        return False  # SQLAlchemy names what is missing
    return True


def plain_sqlite_file(url: str) -> Path | None:
    """The file a ``sqlite:///PATH`` URL names (absolute), as SQLAlchemy reads it (the path
    percent-decoded); None for a URL of any other form, or a database in memory."""
    match = _SQLITE.fullmatch(url)
    if match is None:
        return None
    database = unquote(match["database"])
    return None if database in ("", ":memory:") else Path(database).absolute()


def is_plain_postgres(url: str) -> bool:
    """Whether ``url`` is a ``postgresql+psycopg://`` URL of the plain form, with a port of
    ASCII digits if any (SQLAlchemy reads it with ``int``, which also takes other digits
    and a sign, and refuses an empty one; libpq reads neither the same)."""
    match = _POSTGRES.fullmatch(url) if "\n" not in url else None
    if match is None:
        return False
    return match["port"] is None or re.fullmatch(r"[0-9]+", match["port"]) is not None


def conninfo(url: str) -> str:
    """The libpq connection string of a SQLAlchemy PostgreSQL URL: the same URL under the
    scheme libpq knows (libpq decodes the percent-escapes SQLAlchemy does)."""
    return "postgresql://" + url.partition("://")[2]
