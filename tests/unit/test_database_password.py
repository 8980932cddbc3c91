"""``[database] password_file`` / ``password_env``: how the password is read, every
problem with it told on its key in one line, the URL syncd connects with, and the
password shown nowhere (a message, the URL as shown, ``repr``, a log line)."""

from __future__ import annotations

import ast
import io
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import sqlalchemy as sa
import structlog
from hypothesis import given
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict

import syncd
from syncd import logs
from syncd.config import Config, DatabaseConfig, parse_config
from syncd.errors import ConfigError, ConfigProblem, StorageError
from syncd.secret import Secret, spellings
from syncd.storage import open_storage, store
from syncd.storage.backends import backend_named
from syncd.storage.backends.mariadb import plain_parts
from syncd.storage.engine import parsed_safe
from syncd.storage.urls import conninfo, is_plain_postgres, url_login, with_password

PG = "postgresql+psycopg://syncd@db.example:5432/syncd"
PASSWORD = "p@ss:w/rd%?#&=+ é"  # every character a URL gives a meaning to, and more
PROVIDER = {"name": "shop", "url": "https://panel.example.com/api/v2", "token": "tok-8d41e07b93"}


def parsed(database: dict[str, Any], environ: dict[str, str] | None = None) -> Config:
    raw = {"database": database, "providers": [PROVIDER]}
    return parse_config(raw, source="syncd.toml", environ=environ or {})


def problems(database: dict[str, Any], environ: dict[str, str] | None = None) -> list[str]:
    """Each problem as the CLI prints it: one line, ``key: message``."""
    with pytest.raises(ConfigError) as info:
        parsed(database, environ)
    lines = [str(p) for p in info.value.problems]
    assert all("\n" not in line for line in lines)
    return lines


def file_of(tmp_path: Path, text: str) -> str:
    path = tmp_path / "dbpass"
    path.write_text(text, encoding="utf-8")
    return str(path)


# -- reading it --------------------------------------------------------------------------


def test_the_password_file_is_read_without_its_line_end(tmp_path: Path) -> None:
    config = parsed({"url": PG, "password_file": file_of(tmp_path, f"{PASSWORD}\r\n")})
    assert config.database.password == Secret(PASSWORD)


def test_spaces_around_a_password_are_part_of_it(tmp_path: Path) -> None:
    config = parsed({"url": PG, "password_file": file_of(tmp_path, f"  {PASSWORD} \n")})
    assert config.database.password == Secret(f"  {PASSWORD} ")


def test_the_password_file_expands_the_credentials_directory(tmp_path: Path) -> None:
    file_of(tmp_path, f"{PASSWORD}\n")
    database = {"url": PG, "password_file": "${CREDENTIALS_DIRECTORY}/dbpass"}
    config = parsed(database, {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert config.database.password == Secret(PASSWORD)


def test_the_password_env_names_the_variable_holding_it() -> None:
    config = parsed({"url": PG, "password_env": "DBPASS"}, {"DBPASS": PASSWORD})
    assert config.database.password == Secret(PASSWORD)


def test_no_password_key_leaves_the_url_as_it_is() -> None:
    database = parsed({"url": PG}).database
    assert database.password is None
    assert database.connect_url == PG


# -- every problem, one line on its key, never the value ---------------------------------


def test_both_keys_are_one_problem(tmp_path: Path) -> None:
    database = {"url": PG, "password_file": file_of(tmp_path, PASSWORD), "password_env": "DBPASS"}
    assert problems(database, {"DBPASS": PASSWORD}) == [
        "database.password: set at most one of password_file, password_env"
    ]


def test_a_missing_password_file_is_a_problem_on_its_key(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert problems({"url": PG, "password_file": str(missing)}) == [
        f"database.password_file: cannot read {missing}: No such file or directory"
    ]


def test_an_unreadable_password_file_is_a_problem_on_its_key(tmp_path: Path) -> None:
    (line,) = problems({"url": PG, "password_file": str(tmp_path)})  # a directory
    assert line.startswith(f"database.password_file: cannot read {tmp_path}: ")


@pytest.mark.parametrize("text", ["", "\n", "\r\n"])
def test_an_empty_password_file_is_a_problem_on_its_key(tmp_path: Path, text: str) -> None:
    assert problems({"url": PG, "password_file": file_of(tmp_path, text)}) == [
        "database.password_file: the password is empty"
    ]


def test_an_unset_credentials_directory_is_a_problem_that_says_who_sets_it() -> None:
    assert problems({"url": PG, "password_file": "${CREDENTIALS_DIRECTORY}/dbpass"}) == [
        "database.password_file: environment variable CREDENTIALS_DIRECTORY is not set "
        "(set by systemd with LoadCredential=)"
    ]


def test_an_unset_or_empty_password_env_is_a_problem_on_its_key() -> None:
    assert problems({"url": PG, "password_env": "DBPASS"}) == [
        "database.password_env: environment variable DBPASS is not set"
    ]
    assert problems({"url": PG, "password_env": "DBPASS"}, {"DBPASS": ""}) == [
        "database.password_env: the password is empty"
    ]


def test_a_password_pasted_into_password_env_is_not_echoed() -> None:
    (line,) = problems({"url": PG, "password_env": PASSWORD}, {})
    assert line == "database.password_env: must be the name of an environment variable"


@pytest.mark.parametrize("odd", ["\0", "\udcff"])  # NUL; a byte that is not UTF-8
def test_a_password_no_driver_can_send_is_refused_without_it(odd: str) -> None:
    (line,) = problems({"url": PG, "password_env": "DBPASS"}, {"DBPASS": f"{PASSWORD}{odd}x"})
    assert line == (
        "database.password_env: holds a NUL character or bytes that are not UTF-8: "
        "no driver sends it"
    )


def test_a_password_written_inline_is_an_unknown_key_and_not_echoed() -> None:
    (line,) = problems({"url": PG, "password": PASSWORD})
    assert line == "database.password: unknown key"


@pytest.mark.parametrize("url", ["sqlite:///syncd.db", "sqlite:///:memory:"])
def test_sqlite_takes_no_password(url: str) -> None:
    assert problems({"url": url, "password_env": "DBPASS"}, {"DBPASS": PASSWORD}) == [
        "database.url: sqlite databases take no password: remove password_file / password_env"
    ]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://syncd:in-the-url-5c1e@db.example/syncd",  # plain
        "postgresql://syncd:in-the-url-5c1e@db.example/syncd",  # read by SQLAlchemy
    ],
)
def test_a_url_with_a_password_and_a_password_key_is_refused(url: str) -> None:
    (line,) = problems({"url": url, "password_env": "DBPASS"}, {"DBPASS": PASSWORD})
    assert line == (
        "database.url: holds a password, and password_file / password_env gives one too: "
        "take the password out of the url"
    )


@pytest.mark.parametrize(
    "url", ["postgresql+psycopg://db.example/syncd", "postgresql://:@db.example/syncd"]
)
def test_a_password_needs_a_user_in_the_url(url: str) -> None:
    assert problems({"url": url, "password_env": "DBPASS"}, {"DBPASS": PASSWORD}) == [
        "database.url: names no user to log in with the password: write USER@ before the host"
    ]


# -- the URL syncd connects with ----------------------------------------------------------

URLS = [
    PG,
    "postgresql+psycopg://syncd@/syncd",
    "postgresql+psycopg://syncd:old@[::1]:5432/syncd?sslmode=require",
    "postgresql+psycopg://syncd:@db.example/syncd",
    "postgresql+psycopg://syncd@db.example/syncd?application_name=a@b",
    "postgresql://syncd@db.example/syncd",  # not a plain form: SQLAlchemy writes it
    "mysql+pymysql://syncd@db.example:3306/syncd",
]


@pytest.mark.parametrize("url", URLS)
@pytest.mark.parametrize("password", [PASSWORD, "plain", "%41", "a+b c", "ü€😀", "@@::"])
def test_the_password_goes_into_the_url_as_sqlalchemy_puts_it(url: str, password: str) -> None:
    connect = with_password(url, password)
    assert sa.engine.make_url(connect) == sa.engine.make_url(url).set(password=password)
    assert url_login(connect) == (sa.engine.make_url(url).username, password)
    if is_plain_postgres(url):
        assert is_plain_postgres(connect)  # `syncd status` still reads it without SQLAlchemy
        assert conninfo_to_dict(conninfo(connect))["password"] == password  # as libpq reads it


@pytest.mark.parametrize("password", [PASSWORD, "a+b c"])
def test_mariadb_reads_the_password_its_plain_url_holds(password: str) -> None:
    connect = with_password("mysql+pymysql://syncd@db.example/syncd", password)
    assert plain_parts(connect) == (
        "pymysql",
        {"user": "syncd", "password": password, "host": "db.example", "database": "syncd"},
    )


@pytest.mark.parametrize(
    ("name", "takes"), [("sqlite", False), ("postgresql", True), ("mariadb", True)]
)
def test_each_backend_says_whether_it_takes_a_password(name: str, takes: bool) -> None:
    assert backend_named(name).takes_password is takes


def test_odd_characters_of_a_password_are_percent_encoded() -> None:
    assert with_password(PG, PASSWORD) == (
        "postgresql+psycopg://syncd:p%40ss%3Aw%2Frd%25%3F%23%26%3D%2B%20%C3%A9"
        "@db.example:5432/syncd"
    )


def test_the_url_shown_hides_the_password() -> None:
    database = DatabaseConfig(PG, Secret(PASSWORD))
    assert (
        parsed_safe(database.connect_url) == "postgresql+psycopg://syncd:***@db.example:5432/syncd"
    )


@pytest.mark.parametrize(
    ("url", "login"),
    [
        ("sqlite:///syncd.db", (None, None)),
        (PG, ("syncd", None)),
        ("postgresql+psycopg://db.example/syncd", (None, None)),
        ("postgresql+psycopg://sy%40ncd:a%2Fb@db.example/syncd", ("sy@ncd", "a/b")),
        ("postgresql://syncd:a%2Fb@db.example/syncd", ("syncd", "a/b")),
        ("not a url", (None, None)),
    ],
)
def test_the_user_and_password_a_url_holds(url: str, login: tuple[str | None, ...]) -> None:
    assert url_login(url) == login


def test_a_password_written_in_the_url_is_hidden_from_logs_too() -> None:
    database = DatabaseConfig("postgresql+psycopg://syncd:in-the-url-5c1e@db.example/syncd")
    assert database.secrets() == [Secret("in-the-url-5c1e")]
    assert DatabaseConfig(PG).secrets() == []


# -- shown nowhere, whatever it is ---------------------------------------------------------


def spelled(password: str, text: str) -> bool:
    """Whether ``text`` holds ``password`` whole in any of its spellings (raw, percent-
    or form-encoded, JSON- or HTML-escaped). ``shows`` looks for pieces of 8 characters
    too, letter case aside: an arbitrary password may share one with any text."""
    return any(spelling in text for spelling in spellings(password))


# A marker first: a password of one common character would "show" in any text.
passwords = st.text(
    st.characters(codec="utf-8", blacklist_characters="\0"), min_size=1, max_size=24
).map(lambda s: "Qz~" + s)


@given(password=passwords)
def test_an_arbitrary_password_is_sent_exactly_and_shown_nowhere(password: str) -> None:
    config = parsed({"url": PG, "password_env": "DBPASS"}, {"DBPASS": password})
    connect = config.database.connect_url
    assert sa.engine.make_url(connect).password == password
    assert conninfo_to_dict(conninfo(connect))["password"] == password
    # Shown the same whatever the password: no piece of it can be there. (Not "no piece
    # of it shows": the search ignores case, and "PROVIDER" is a piece of "Qz~PROVIDER"
    # that a config's repr shows as "Provider" with no password at all.)
    stand_in = parsed({"url": PG, "password_env": "DBPASS"}, {"DBPASS": "Qz~stand-in"})
    for shown, expected in (
        (parsed_safe(connect), parsed_safe(stand_in.database.connect_url)),
        (repr(config), repr(stand_in)),
        (str(config), str(stand_in)),
        (repr(config.database), repr(stand_in.database)),
    ):
        assert shown == expected

    out = io.StringIO()
    logs.configure(fmt="json", level="debug", secrets=config.secrets(), stream=out)
    log = structlog.get_logger("test")
    log.error("db.failed", url=connect, error=f"login {password} refused", raw=password)
    log.error("db.failed", form=quote_plus(password), encoded=quote(password, safe=""))
    logging.getLogger("driver").warning("connecting to %s", connect)
    assert not spelled(password, out.getvalue()), out.getvalue()
    assert len(out.getvalue().splitlines()) == 3


@given(password=passwords)
def test_no_config_problem_shows_an_arbitrary_password(password: str) -> None:
    with_it = "postgresql+psycopg://syncd:" + quote(password, safe="") + "@db.example/syncd"
    cases = [
        ({"url": "sqlite:///syncd.db", "password_env": "DBPASS"}, {"DBPASS": password}),
        ({"url": with_it, "password_env": "DBPASS"}, {"DBPASS": password}),
        ({"url": with_it.replace("example/", "example:port/"), "notify": "yes"}, {}),
        ({"url": PG, "password_env": "DBPASS", "password_file": "/nope"}, {"DBPASS": password}),
    ]
    for database, environ in cases:
        with pytest.raises(ConfigError) as info:
            parsed(database, environ)
        found: list[ConfigProblem] = info.value.problems
        assert found
        assert not any(spelled(password, str(p)) for p in found), found


# -- no caller forgets ----------------------------------------------------------------------


def test_outside_the_config_database_url_is_only_ever_shown() -> None:
    """Every place that opens the database takes ``connect_url``: ``database.url`` is
    read, outside the config package, only inside an f-string (a message)."""
    root = Path(syncd.__file__).parent
    read: list[str] = []
    for path in root.rglob("*.py"):
        if path.parent == root / "config":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        in_messages = {
            id(node) for text in ast.walk(tree) if isinstance(text, ast.JoinedStr)
            for node in ast.walk(text)
        }  # fmt: skip
        read += [
            f"{path.relative_to(root)}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr == "url"
            and isinstance(node.value, ast.Attribute) and node.value.attr == "database"
            and id(node) not in in_messages
        ]  # fmt: skip
    assert read == []


def test_opening_hides_the_password_in_what_the_driver_says(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """libpq quotes a connection value it refuses ("forbidden value ... in percent-encoded
    value: ..."): the message of a database that cannot be opened hides the password."""

    def refused(*_: object, **__: object) -> None:
        said = Exception(f'invalid value in percent-encoded value: "{quote(PASSWORD, safe="")}"')
        raise sa.exc.OperationalError("connect", {}, said)

    monkeypatch.setattr(store, "_bring_up", refused)
    with pytest.raises(StorageError) as info:
        open_storage(with_password(PG, PASSWORD))
    assert str(info.value) == (
        "cannot open database postgresql+psycopg://syncd:***@db.example:5432/syncd: "
        'database error: invalid value in percent-encoded value: "***"'
    )


# -- passwords written where a URL hides none -------------------------------------------------


@pytest.mark.parametrize("key", ["password", "passwd", "pwd"])
@pytest.mark.parametrize(
    "url", ["mysql+pymysql://syncd@db.example/syncd", "postgresql+psycopg://syncd@db.example/syncd"]
)
def test_a_password_in_the_url_s_query_is_hidden_and_counts_as_written(url: str, key: str) -> None:
    with_it = f"{url}?{key}=Qz-{quote(PASSWORD, safe='')}&connect_timeout=3"
    shown = parsed_safe(with_it)
    assert f"{key}=***" in shown and "connect_timeout=3" in shown  # SQLAlchemy sorts them
    assert "Qz" not in shown
    assert url_login(with_it) == ("syncd", f"Qz-{PASSWORD}")
    assert Secret(f"Qz-{PASSWORD}") in parsed({"url": with_it}).secrets()
    (line,) = problems({"url": with_it, "password_env": "DBPASS"}, {"DBPASS": PASSWORD})
    assert "holds a password" in line and "Qz" not in line


@pytest.mark.parametrize("scheme", ["mysql+mysqldb", "postgresql+psycopg", "mysql+pymysql"])
def test_a_raw_at_sign_in_a_password_is_refused_without_showing_any_of_it(scheme: str) -> None:
    (line,) = problems({"url": f"{scheme}://u:Sec@ret12pw@127.0.0.1:3306/db"})
    assert line == "database.url: the password in it holds an @: write it %40, or use password_file"


@pytest.mark.parametrize(
    "url",
    [
        "mysql+pymysql://syncd@db.example",
        "mysql+pymysql://syncd@db.example/",
        "mysql+pymysql://syncd@db.example/?connect_timeout=3",
    ],
)
def test_a_mariadb_url_must_name_its_database(url: str) -> None:
    (line,) = problems({"url": url})
    assert line == "database.url: names no database: end it with /DATABASE, syncd's own"
