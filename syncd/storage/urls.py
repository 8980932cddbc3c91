"""Database URLs, read without SQLAlchemy where their form is plain.

Every command checks ``database.url`` when it loads the config, and ``syncd status`` reads
the database through its driver alone: neither may pay for importing SQLAlchemy (nearly
half a second) to learn what ``sqlite:///syncd.db`` means. The two plain forms syncd
documents, ``sqlite:///PATH`` and ``postgresql+psycopg://...``, are read by their backends
(``plain_form``); any other URL is judged by SQLAlchemy itself, so every message about a
bad URL stays SQLAlchemy's.

The database password, when ``[database] password_file`` or ``password_env`` gives it, is
put into the URL only to connect (``with_password``, through ``DatabaseConfig.connect_url``):
``database.url`` itself, the one messages may show, never holds it.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from syncd.storage.backends import Backend, UnknownBackend, backend_for_url

# The plain forms as their backends read them, under the names older callers know.
from syncd.storage.backends.postgresql import conninfo
from syncd.storage.backends.postgresql import is_plain as is_plain_postgres
from syncd.storage.backends.sqlite import plain_file as plain_sqlite_file

__all__ = [
    "conninfo",
    "database_url_problem",
    "is_plain_postgres",
    "plain_backend",
    "plain_sqlite_file",
    "url_login",
    "with_password",
]


def plain_backend(url: str) -> Backend | None:
    """The backend of ``url`` when the URL has a form it reads without SQLAlchemy."""
    try:
        backend = backend_for_url(url)
    except UnknownBackend:
        return None
    return backend if backend.plain_form(url) else None


# Query parameters a driver takes as the password (libpq's, PyMySQL's, mysqlclient's).
QUERY_PASSWORDS = ("password", "passwd", "pwd")


def query_password(url: str) -> str | None:
    """A password written in the URL's query (``?passwd=...``), decoded; None if none."""
    query = url.partition("?")[2]
    found = [v for k, v in parse_qsl(query, keep_blank_values=True) if k in QUERY_PASSWORDS]
    return found[0] if found else None


def database_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be used as a database URL, or ``None``. Opens no connection."""
    login = url.partition("://")[2].split("/", 1)[0].split("?", 1)[0]
    if login.count("@") > 1:
        # The URL is read up to the first "@": the rest of a password would be taken for
        # the host, and shown as one. Said without the URL.
        return "the password in it holds an @: write it %40, or use password_file"
    if (plain := plain_backend(url)) is not None and plain.driver_imports(url):
        return plain.url_problem(url)  # SQLAlchemy surely accepts it
    import sqlalchemy as sa  # noqa: PLC0415 - only for a URL of another form
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError  # noqa: PLC0415

    from syncd.storage.engine import parsed_safe  # noqa: PLC0415

    try:
        parsed = sa.engine.make_url(url)
    except (ArgumentError, ValueError):  # ValueError: e.g. a port that is not a number
        return f"not a database URL: {parsed_safe(url)!r}"
    try:
        # An engine syncd has no backend for is refused here, whether or not its driver
        # happens to be installed: opening it would only fail later, at the first job.
        backend: Backend = backend_for_url(parsed)
    except UnknownBackend as exc:
        return str(exc)
    try:
        parsed.get_dialect().import_dbapi()
    except NoSuchModuleError:
        return f"unknown database kind in {parsed_safe(url)!r}"
    except ImportError as exc:
        return f"database driver {exc.name or '?'} is not installed{backend.driver_hint}"
    return backend.url_problem(url)


def url_login(url: str) -> tuple[str | None, str | None]:
    """The user and the password written in ``url`` itself, decoded; None for one it
    does not hold (both, for a URL that is no database URL at all)."""
    plain = plain_backend(url)
    if plain is not None and not plain.takes_password:
        return None, None
    in_query = query_password(url)
    if plain is not None and (login := plain.plain_login(url)) is not None:
        return login[0], login[1] or in_query
    import sqlalchemy as sa  # noqa: PLC0415 - only for a URL of another form
    from sqlalchemy.exc import ArgumentError  # noqa: PLC0415

    try:
        parsed = sa.engine.make_url(url)
    except (ArgumentError, ValueError):
        return None, None
    return parsed.username, in_query if parsed.password is None else str(parsed.password)


def with_password(url: str, password: str) -> str:
    """``url``, which names a user, with ``password`` as its password, percent-encoded so
    that SQLAlchemy and the driver read back exactly ``password`` (as ``URL.set(password=
    ...)`` has it). The URL to connect with: never one to show."""
    plain = plain_backend(url)
    if plain is not None and (written := plain.plain_with_password(url, password)) is not None:
        return written  # and still plain: no SQLAlchemy
    import sqlalchemy as sa  # noqa: PLC0415

    return sa.engine.make_url(url).set(password=password).render_as_string(hide_password=False)
