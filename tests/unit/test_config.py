"""Configuration: lookup, parsing into typed values, validation, and how the CLI reports it.

The configuration and the exit codes: every problem of a config file is reported at
once with its key, the process exits 2 without touching the database or the network, and a
token never shows up in a message.
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict

import syncd.cli.commands
import syncd.config
import syncd.jobs.runner
import syncd.logs
from syncd.cli import main
from syncd.config import Config, find_config, load_config
from syncd.errors import ConfigError, ConfigProblem, UserError
from syncd.storage.backends.mariadb import plain_parts as plain_mariadb
from syncd.storage.engine import sqlite_file
from syncd.storage.urls import conninfo, database_url_problem, is_plain_postgres, plain_sqlite_file

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"
TOKEN = "tok-cfg-8d41e07b93"  # distinctive, so a leak is easy to spot
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
PROVIDER_URL = "https://panel.example.com/api/v2"


# -- helpers -----------------------------------------------------------------------------


def q(text: str) -> str:
    """A TOML basic string (JSON string syntax is a subset of it for these values)."""
    return json.dumps(text)


def provider(
    name: str = "shop",
    url: str = PROVIDER_URL,
    *,
    token: str | None = TOKEN,
    **extra: str,
) -> str:
    """One ``[[providers]]`` table; ``extra`` values are raw TOML."""
    lines = ["[[providers]]", f"name = {q(name)}", f"url = {q(url)}"]
    if token is not None:
        lines.append(f"token = {q(token)}")
    lines += [f"{key} = {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n\n"


def write(tmp_path: Path, text: str, name: str = "syncd.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, text), environ={} if environ is None else environ)


def problems_of(
    tmp_path: Path, text: str, environ: dict[str, str] | None = None
) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, environ)
    problems = info.value.problems
    assert problems, "a ConfigError must carry at least one problem"
    return problems


def keys(problems: list[ConfigProblem]) -> set[str]:
    return {p.key for p in problems}


def assert_no_token(*texts: str, token: str = TOKEN) -> None:
    for text in texts:
        assert token not in text


# -- config.example.toml -----------------------------------------------------------------


def example_config(tmp_path: Path, *, low_balance: bool) -> Config:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "cheapsmm.token").write_text(f"{TOKEN}\n", encoding="utf-8")
    text = EXAMPLE.read_text(encoding="utf-8")
    if low_balance:
        assert '# low_balance = "25.00"' in text
        text = text.replace('# low_balance = "25.00"', 'low_balance = "25.00"')
    return load_text(tmp_path, text, {"CREDENTIALS_DIRECTORY": str(creds)})


def test_example_config_parses_into_typed_values(tmp_path: Path) -> None:
    config = example_config(tmp_path, low_balance=True)

    assert config.database.url == "sqlite:///syncd.db"
    assert config.logging.format == "auto"
    assert config.logging.level == "info"

    (p,) = config.providers
    assert p.name == "cheapsmm"
    assert p.url == "https://cheapsmmpanel.com/api/v2"
    assert p.token.reveal() == TOKEN  # read from ${CREDENTIALS_DIRECTORY} and stripped
    assert p.dialect == "api_token"
    assert p.catalog_interval == timedelta(hours=1)
    assert p.orders_interval == timedelta(minutes=2)
    assert p.balance_interval == timedelta(minutes=10)
    assert p.status_batch_size == 100
    assert p.max_concurrency == 4
    assert p.timeout == timedelta(seconds=30)
    assert p.give_up_after == timedelta(days=30)
    assert p.requests_per_minute is None  # commented out: no limit
    assert p.price_guard is None  # commented out: off
    for duration in (
        p.catalog_interval,
        p.orders_interval,
        p.balance_interval,
        p.timeout,
        p.give_up_after,
    ):
        assert type(duration) is timedelta
    assert type(p.low_balance) is Decimal
    assert p.low_balance == Decimal("25.00")
    assert type(p.status_batch_size) is int

    (w,) = config.webhooks
    assert w.name == "ops"
    assert w.url == "https://hooks.example.com/syncd"
    assert w.format == "json"
    assert w.secret is None
    assert w.events == frozenset({"balance.low", "provider.down"})


def test_example_config_lists_the_defaults(tmp_path: Path) -> None:
    """The example says it lists every key with its default: loading it equals the defaults."""
    from_example = example_config(tmp_path, low_balance=False).providers[0]
    minimal = load_text(tmp_path, provider("cheapsmm", "https://cheapsmmpanel.com/api/v2"))
    assert from_example.low_balance is None
    assert from_example == minimal.providers[0]


def test_defaults_apply_when_keys_are_absent(tmp_path: Path) -> None:
    config = load_text(tmp_path, provider())

    assert config.database.url == "sqlite:///syncd.db"
    assert config.logging.format == "auto"
    assert config.logging.level == "info"
    assert config.webhooks == ()
    (p,) = config.providers
    assert p.dialect == "api_token"
    assert p.catalog_interval == timedelta(hours=1)
    assert p.orders_interval == timedelta(minutes=2)
    assert p.balance_interval == timedelta(minutes=10)
    assert p.status_batch_size == 100
    assert p.max_concurrency == 4
    assert p.timeout == timedelta(seconds=30)
    assert p.give_up_after == timedelta(days=30)
    assert p.low_balance is None


def test_full_config_every_key_set(tmp_path: Path) -> None:
    secret_dir = tmp_path / "secrets"
    secret_dir.mkdir()
    (secret_dir / "ops.secret").write_text(f"  {WEBHOOK_SECRET}\n", encoding="utf-8")
    db = f"sqlite:///{tmp_path / 'state.db'}"
    text = f"""
[database]
url = {q(db)}

[logging]
format = "json"
level = "debug"

{
        provider(
            "panel-1_b",
            "http://127.0.0.1:8080/api",
            dialect='"key"',
            catalog_interval='"1h30m"',
            orders_interval='"90s"',
            balance_interval='"5m"',
            status_batch_size="1",
            max_concurrency="64",
            timeout='"10s"',
            low_balance='"0.50"',
            give_up_after='"7d"',
        )
    }
{provider("second", token=None, token_env='"SECOND_TOKEN"', status_batch_size="100")}
[[webhooks]]
name = "ops"
url = "https://hooks.example.com/syncd"
format = "slack"
secret_file = "${{CREDENTIALS_DIRECTORY}}/ops.secret"

[[webhooks]]
name = "chat"
url = "https://chat.example.com/hook"
format = "discord"
secret = {q(WEBHOOK_SECRET)}
events = ["order.ambiguous"]
"""
    config = load_text(
        tmp_path,
        text,
        {"CREDENTIALS_DIRECTORY": str(secret_dir), "SECOND_TOKEN": " second-token\n"},
    )

    assert config.database.url == db
    assert config.logging.format == "json"
    assert config.logging.level == "debug"
    first, second = config.providers
    assert first.name == "panel-1_b"
    assert first.url == "http://127.0.0.1:8080/api"  # plain http is fine on loopback
    assert first.dialect == "key"
    assert first.catalog_interval == timedelta(hours=1, minutes=30)
    assert first.orders_interval == timedelta(seconds=90)
    assert first.balance_interval == timedelta(minutes=5)
    assert first.status_batch_size == 1
    assert first.max_concurrency == 64
    assert first.timeout == timedelta(seconds=10)
    assert first.low_balance == Decimal("0.50")
    assert first.give_up_after == timedelta(days=7)
    assert second.token.reveal() == "second-token"
    assert second.status_batch_size == 100

    ops, chat = config.webhooks
    assert ops.format == "slack"
    assert ops.secret is not None
    assert ops.secret.reveal() == WEBHOOK_SECRET
    assert ops.events is None  # default: every event
    assert chat.format == "discord"
    assert chat.secret is not None
    assert chat.secret.reveal() == WEBHOOK_SECRET
    assert chat.events == frozenset({"order.ambiguous"})
    assert set(config.secrets()) == {first.token, second.token, ops.secret, chat.secret}


# -- lookup order ------------------------------------------------------------------------


@pytest.fixture
def locations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A config in each place of the lookup order; /etc is redirected into tmp_path."""
    cwd = tmp_path / "cwd"
    etc = tmp_path / "etc" / "syncd"
    cwd.mkdir()
    etc.mkdir(parents=True)
    paths = {
        "explicit": tmp_path / "explicit.toml",
        "env": tmp_path / "env.toml",
        "cwd": cwd / "syncd.toml",
        "etc": etc / "syncd.toml",
    }
    for path in paths.values():
        path.write_text(provider(), encoding="utf-8")
    relative, _etc = syncd.config.DEFAULT_LOCATIONS
    monkeypatch.setattr(syncd.config, "DEFAULT_LOCATIONS", (relative, paths["etc"]))
    monkeypatch.chdir(cwd)
    # find_config must read the mapping it is given, not the process environment.
    monkeypatch.setenv("SYNCD_CONFIG", str(tmp_path / "from-process-env.toml"))
    return paths


def test_default_locations_are_the_documented_ones() -> None:
    assert (
        Path("syncd.toml"),
        Path("/etc/syncd/syncd.toml"),
    ) == syncd.config.DEFAULT_LOCATIONS


def test_explicit_config_beats_everything(locations: dict[str, Path]) -> None:
    environ = {"SYNCD_CONFIG": str(locations["env"])}
    assert find_config(str(locations["explicit"]), environ) == locations["explicit"]


def test_syncd_config_env_beats_working_directory(locations: dict[str, Path]) -> None:
    environ = {"SYNCD_CONFIG": str(locations["env"])}
    assert find_config(None, environ) == locations["env"]


def test_working_directory_beats_etc(locations: dict[str, Path]) -> None:
    assert find_config(None, {}).resolve() == locations["cwd"].resolve()


def test_etc_is_the_last_resort(locations: dict[str, Path]) -> None:
    locations["cwd"].unlink()
    assert find_config(None, {}) == locations["etc"]


def test_no_config_anywhere_is_a_user_error(locations: dict[str, Path]) -> None:
    locations["cwd"].unlink()
    locations["etc"].unlink()
    with pytest.raises(UserError) as info:
        find_config(None, {})
    assert "config" in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_explicit_file_is_a_user_error_naming_it(
    locations: dict[str, Path], tmp_path: Path
) -> None:
    missing = tmp_path / "nope" / "missing.toml"
    with pytest.raises(UserError) as info:
        find_config(str(missing), {"SYNCD_CONFIG": str(locations["env"])})
    assert str(missing) in str(info.value)
    assert not isinstance(info.value, ConfigError)


def test_a_directory_given_as_the_config_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a file"):
        find_config(str(tmp_path), {})


def test_missing_syncd_config_file_is_a_user_error_naming_it(
    locations: dict[str, Path], tmp_path: Path
) -> None:
    missing = tmp_path / "missing-from-env.toml"
    with pytest.raises(UserError) as info:
        find_config(None, {"SYNCD_CONFIG": str(missing)})
    assert str(missing) in str(info.value)


# -- token, token_file, token_env --------------------------------------------------------


def test_token_is_required(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, provider(token=None))
    assert "providers[0].token" in keys(problems)


@pytest.mark.parametrize(
    "sources",
    [
        ("token", "token_file"),
        ("token", "token_env"),
        ("token_file", "token_env"),
        ("token", "token_file", "token_env"),
    ],
)
def test_exactly_one_token_source(tmp_path: Path, sources: tuple[str, ...]) -> None:
    """Every source is valid on its own, so only the choice itself can be the problem."""
    token_file = write(tmp_path, TOKEN, "shop.token")
    values = {"token": q(TOKEN), "token_file": q(str(token_file)), "token_env": '"SHOP_TOKEN"'}
    extra = {key: values[key] for key in sources if key != "token"}
    text = provider(token=TOKEN if "token" in sources else None, **extra)
    problems = problems_of(tmp_path, text, {"SHOP_TOKEN": TOKEN})
    assert all(p.key.startswith("providers[0].token") for p in problems)
    assert_no_token(*(str(p) for p in problems))


def test_token_file_is_read_and_stripped(tmp_path: Path) -> None:
    token_file = write(tmp_path, f"\n  {TOKEN}  \r\n", "shop.token")
    config = load_text(tmp_path, provider(token=None, token_file=q(str(token_file))))
    assert config.providers[0].token.reveal() == TOKEN


def test_token_file_expands_credentials_directory_from_given_environ(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "shop.token").write_text(TOKEN, encoding="utf-8")
    # The process environment says something else: the mapping passed in must win.
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "elsewhere"))
    text = provider(token=None, token_file='"${CREDENTIALS_DIRECTORY}/shop.token"')
    config = load_text(tmp_path, text, {"CREDENTIALS_DIRECTORY": str(creds)})
    assert config.providers[0].token.reveal() == TOKEN


def test_unset_credentials_directory_is_a_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "shop.token").write_text(TOKEN, encoding="utf-8")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))  # not in the given mapping
    text = provider(token=None, token_file='"${CREDENTIALS_DIRECTORY}/shop.token"')
    problems = problems_of(tmp_path, text, {})
    (problem,) = problems
    assert problem.key == "providers[0].token_file"
    assert "CREDENTIALS_DIRECTORY" in problem.message


def test_missing_token_file_is_a_problem_on_its_key(tmp_path: Path) -> None:
    missing = tmp_path / "no-such.token"
    problems = problems_of(tmp_path, provider(token=None, token_file=q(str(missing))))
    (problem,) = problems
    assert problem.key == "providers[0].token_file"
    assert str(missing) in problem.message


def test_unreadable_token_file_is_a_problem_on_its_key(tmp_path: Path) -> None:
    directory = tmp_path / "a-directory"
    directory.mkdir()
    problems = problems_of(tmp_path, provider(token=None, token_file=q(str(directory))))
    assert keys(problems) == {"providers[0].token_file"}


def test_binary_token_file_is_a_problem_on_its_key(tmp_path: Path) -> None:
    binary = tmp_path / "binary.token"
    binary.write_bytes(b"\xff\xfe\x00tok")
    problems = problems_of(tmp_path, provider(token=None, token_file=q(str(binary))))
    assert keys(problems) == {"providers[0].token_file"}


def test_token_env_reads_the_variable_from_given_environ(tmp_path: Path) -> None:
    config = load_text(
        tmp_path, provider(token=None, token_env='"SHOP_TOKEN"'), {"SHOP_TOKEN": f"{TOKEN}\n"}
    )
    assert config.providers[0].token.reveal() == TOKEN


def test_token_env_missing_variable_is_a_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SHOP_TOKEN", TOKEN)  # only the process env has it
    problems = problems_of(tmp_path, provider(token=None, token_env='"SHOP_TOKEN"'), {})
    (problem,) = problems
    assert problem.key == "providers[0].token_env"
    assert "SHOP_TOKEN" in problem.message


@pytest.mark.parametrize(
    ("source", "key"),
    [
        ("inline", "providers[0].token"),
        ("inline-blank", "providers[0].token"),
        ("file", "providers[0].token_file"),
        ("env", "providers[0].token_env"),
    ],
)
def test_empty_token_is_a_problem(tmp_path: Path, source: str, key: str) -> None:
    empty_file = write(tmp_path, " \n\n", "empty.token")
    text = {
        "inline": provider(token=""),
        "inline-blank": provider(token="   "),
        "file": provider(token=None, token_file=q(str(empty_file))),
        "env": provider(token=None, token_env='"SHOP_TOKEN"'),
    }[source]
    problems = problems_of(tmp_path, text, {"SHOP_TOKEN": "  \n"})
    assert keys(problems) == {key}


@pytest.mark.parametrize("source", ["inline", "file", "env"])
def test_token_never_in_repr_or_str(tmp_path: Path, source: str) -> None:
    token_file = write(tmp_path, TOKEN, "shop.token")
    text = {
        "inline": provider(),
        "file": provider(token=None, token_file=q(str(token_file))),
        "env": provider(token=None, token_env='"SHOP_TOKEN"'),
    }[source]
    text += f"""
[[webhooks]]
name = "ops"
url = "https://hooks.example.com/syncd"
secret = {q(WEBHOOK_SECRET)}
"""
    config = load_text(tmp_path, text, {"SHOP_TOKEN": TOKEN})
    assert config.providers[0].token.reveal() == TOKEN  # the token is there...
    texts = (repr(config), str(config), repr(config.providers[0]), f"{config.providers[0]}")
    assert_no_token(*texts)  # ...but never shown
    assert_no_token(*texts, token=WEBHOOK_SECRET)
    assert_no_token(repr(config.webhooks[0]), str(config.webhooks[0]), token=WEBHOOK_SECRET)


def test_token_never_in_problem_messages(tmp_path: Path) -> None:
    """A broken file that holds the token in several places: no message repeats it."""
    bad_secret = f"not-a-whsec-{TOKEN}"
    text = (
        provider("Shop", token=TOKEN, timeout='"soon"')
        + provider("two", token=TOKEN, token_env='"SHOP_TOKEN"')
        + provider("three", "http://panel.example.com/api", token=TOKEN, dialect='"soap"')
        + f"""
[[webhooks]]
name = "ops"
url = "https://hooks.example.com/syncd"
secret = {q(bad_secret)}
"""
    )
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, text, {"SHOP_TOKEN": TOKEN})
    problems = info.value.problems
    assert len(problems) >= 5
    assert_no_token(str(info.value), repr(info.value), *(str(p) for p in problems))
    assert_no_token(str(info.value), *(str(p) for p in problems), token=bad_secret)


# -- webhook secrets ---------------------------------------------------------------------


def webhook(**extra: str) -> str:
    lines = ["[[webhooks]]", 'name = "ops"', 'url = "https://hooks.example.com/syncd"']
    lines += [f"{key} = {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n"


def test_webhook_secret_file_expands_credentials_directory(tmp_path: Path) -> None:
    (tmp_path / "ops.secret").write_text(WEBHOOK_SECRET + "\n", encoding="utf-8")
    text = provider() + webhook(secret_file='"${CREDENTIALS_DIRECTORY}/ops.secret"')
    config = load_text(tmp_path, text, {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    secret = config.webhooks[0].secret
    assert secret is not None
    assert secret.reveal() == WEBHOOK_SECRET


def test_webhook_secret_sources_are_exclusive(tmp_path: Path) -> None:
    text = provider() + webhook(secret=q(WEBHOOK_SECRET), secret_env='"OPS_SECRET"')
    problems = problems_of(tmp_path, text, {"OPS_SECRET": WEBHOOK_SECRET})
    assert any(p.key.startswith("webhooks[0].secret") for p in problems)


@pytest.mark.parametrize("secret", ["not-whsec", "whsec_", "whsec_***not base64***"])
def test_webhook_secret_must_be_standard_webhooks(tmp_path: Path, secret: str) -> None:
    problems = problems_of(tmp_path, provider() + webhook(secret=q(secret)))
    assert keys(problems) == {"webhooks[0].secret"}


# -- validation: one problem, one key ----------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"timeout": '"soon"'}, "timeout"),
        ({"timeout": '"0s"'}, "timeout"),
        ({"timeout": '"30"'}, "timeout"),
        ({"timeout": '"1.5h"'}, "timeout"),
        ({"timeout": "30"}, "timeout"),
        ({"catalog_interval": '"1w"'}, "catalog_interval"),
        ({"orders_interval": '"-2m"'}, "orders_interval"),
        ({"balance_interval": '""'}, "balance_interval"),
        ({"give_up_after": '"forever"'}, "give_up_after"),
        ({"status_batch_size": "101"}, "status_batch_size"),
        ({"status_batch_size": "0"}, "status_batch_size"),
        ({"status_batch_size": '"100"'}, "status_batch_size"),
        ({"status_batch_size": "true"}, "status_batch_size"),
        ({"status_batch_size": "50.0"}, "status_batch_size"),
        ({"max_concurrency": "0"}, "max_concurrency"),
        ({"max_concurrency": "65"}, "max_concurrency"),
        ({"requests_per_minute": "0"}, "requests_per_minute"),
        ({"price_guard": "10"}, "price_guard"),
        ({"price_guard": '"10"'}, "price_guard"),
        ({"price_guard": '"0%"'}, "price_guard"),
        ({"price_guard": '"-5%"'}, "price_guard"),
        ({"price_guard": '"1e3%"'}, "price_guard"),
        ({"price_guard": '"1001%"'}, "price_guard"),
        ({"requests_per_minute": "-5"}, "requests_per_minute"),
        ({"requests_per_minute": '"120"'}, "requests_per_minute"),
        ({"requests_per_minute": "1.5"}, "requests_per_minute"),
        ({"requests_per_minute": "60001"}, "requests_per_minute"),
        ({"dialect": '"soap"'}, "dialect"),
        ({"dialect": "1"}, "dialect"),
        ({"low_balance": '"-0.01"'}, "low_balance"),
        ({"low_balance": '"lots"'}, "low_balance"),
        ({"low_balance": '"NaN"'}, "low_balance"),
        ({"low_balance": "25.0"}, "low_balance"),  # money is a decimal string, never a float
        ({"colour": '"blue"'}, "colour"),
        ({"token_fiel": '"/x"'}, "token_fiel"),
        ({"balance_interval": '"99999999999999999999d"'}, "balance_interval"),
        ({"orders_interval": '"1000000000d"'}, "orders_interval"),
        ({"orders_interval": '"31d"'}, "orders_interval"),
        ({"timeout": '"99999999999999999999s"'}, "timeout"),
        ({"timeout": '"2h"'}, "timeout"),
        ({"give_up_after": '"999999999d"'}, "give_up_after"),
    ],
)
def test_each_provider_problem_is_reported_on_its_key(
    tmp_path: Path, extra: dict[str, str], key: str
) -> None:
    problems = problems_of(tmp_path, provider(**extra))
    assert keys(problems) == {f"providers[0].{key}"}
    assert all(p.message for p in problems)


@pytest.mark.parametrize(
    ("name", "url", "key"),
    [
        ("Shop", PROVIDER_URL, "providers[0].name"),
        ("shop panel", PROVIDER_URL, "providers[0].name"),
        ("", PROVIDER_URL, "providers[0].name"),
        ("p" * 65, PROVIDER_URL, "providers[0].name"),
        ("shop", "http://panel.example.com/api", "providers[0].url"),
        ("shop", "http://10.0.0.5/api", "providers[0].url"),
        ("shop", "ftp://panel.example.com/api", "providers[0].url"),
        ("shop", "panel.example.com/api", "providers[0].url"),
        ("shop", "https://user:pw@panel.example.com/api", "providers[0].url"),
    ],
)
def test_bad_provider_name_or_url(tmp_path: Path, name: str, url: str, key: str) -> None:
    problems = problems_of(tmp_path, provider(name, url))
    assert keys(problems) == {key}


@pytest.mark.parametrize(
    "url",
    [
        "https://panel.example.com/api/v2?key=s3cr3tt0ken",
        "https://panel.example.com/api/v2?action=x&API_TOKEN=s3cr3tt0ken",
        "https://panel.example.com/api/v2?apikey=",
    ],
)
def test_a_provider_url_carrying_the_token_is_refused_without_showing_it(
    tmp_path: Path, url: str
) -> None:
    problems = problems_of(tmp_path, provider(url=url))
    assert keys(problems) == {"providers[0].url"}
    assert "s3cr3tt0ken" not in str(problems)
    assert "must not carry the token" in str(problems)


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:9/api", "http://localhost:8080/api", "http://[::1]:8080/api"],
)
def test_plain_http_is_accepted_on_loopback(tmp_path: Path, url: str) -> None:
    assert load_text(tmp_path, provider(url=url)).providers[0].url == url


def test_provider_url_with_a_non_numeric_port_is_a_problem(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, provider(url="https://panel.example.com:https/api"))
    assert keys(problems) == {"providers[0].url"}


def test_provider_url_is_required(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, '[[providers]]\nname = "shop"\ntoken = "x1234567"\n')
    assert keys(problems) == {"providers[0].url"}


@pytest.mark.parametrize(("value", "ok"), [('"30s"', True), ('"6s"', True), ('"5s"', False),
                                           ('"11m"', False), ("30", False)])  # fmt: skip
def test_cluster_lease_ttl(tmp_path: Path, value: str, ok: bool) -> None:
    text = provider() + f"[cluster]\nlease_ttl = {value}\n"
    if ok:
        assert load_text(tmp_path, text).cluster.lease_ttl.total_seconds() > 0
    else:
        assert keys(problems_of(tmp_path, text)) == {"cluster.lease_ttl"}


def test_a_token_too_short_to_be_one_is_a_problem_and_is_not_echoed(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path, provider(token="1"))
    assert problem.key == "providers[0].token"
    assert "fewer than the 8" in problem.message and "'1'" not in problem.message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("", "providers"),
        ("[database]\nurl = 'sqlite:///x.db'\n", "providers"),
        ("providers = []\n", "providers"),
        ("[providers]\nname = 'shop'\n", "providers"),
        ("database = 'sqlite:///x.db'\n" + provider(), "database"),
        ("[database]\nurl = 'not a url'\n" + provider(), "database.url"),
        ("[database]\nurl = 'nosuchdb://x/y'\n" + provider(), "database.url"),
        ("[database]\nurl = 5\n" + provider(), "database.url"),
        ("[database]\npath = 'x.db'\n" + provider(), "database.path"),
        ("[logging]\nlevel = 'loud'\n" + provider(), "logging.level"),
        ("[logging]\nlevel = 'INFO'\n" + provider(), "logging.level"),
        ("[logging]\nformat = 'xml'\n" + provider(), "logging.format"),
        ("[logging]\ncolour = true\n" + provider(), "logging.colour"),
        ("[metrics]\nport = 9\n" + provider(), "metrics.port"),
        ("[metrics]\nlisten = '0.0.0.0:9464'\n" + provider(), "metrics.listen"),
        ("[metrics]\npublic = 'yes'\n" + provider(), "metrics.public"),
        (provider() + webhook(format="'xml'"), "webhooks[0].format"),
        (provider() + webhook(events="['balance.low', 'nope.event']"), "webhooks[0].events"),
        (provider() + webhook(events="'balance.low'"), "webhooks[0].events"),
        (provider() + webhook(retries="3"), "webhooks[0].retries"),
        (provider() + "[[webhooks]]\nname = 'ops'\n", "webhooks[0].url"),
        (provider() + webhook(secret_env="'OPS_SECRET'"), "webhooks[0].secret_env"),
    ],
)
def test_each_other_problem_is_reported_on_its_key(tmp_path: Path, text: str, key: str) -> None:
    problems = problems_of(tmp_path, text)
    assert keys(problems) == {key}


def test_database_url_with_a_bad_port_is_a_problem(tmp_path: Path) -> None:
    text = '[database]\nurl = "postgresql+psycopg://syncd@db.example:pg/syncd"\n' + provider()
    problems = problems_of(tmp_path, text)
    assert keys(problems) == {"database.url"}


def test_database_password_is_not_echoed(tmp_path: Path) -> None:
    text = '[database]\nurl = "nosuchdb://syncd:hunter2-db-pass@db.example/syncd"\n'
    problems = problems_of(tmp_path, text + provider())
    assert keys(problems) == {"database.url"}
    assert_no_token(*(str(p) for p in problems), token="hunter2-db-pass")


# Database URLs of the plain forms are read without SQLAlchemy (every command loads the
# config; `syncd status` never imports SQLAlchemy): the answers must be SQLAlchemy's.

PLAIN_URLS = [
    "sqlite:///syncd.db",
    "sqlite:////var/lib/syncd/syncd.db",
    "sqlite+pysqlite:///a%20b%3F.db",
    "sqlite:///",
    "sqlite:///:memory:",
    "postgresql+psycopg://syncd:p%40ss@db.example:5432/syncd?sslmode=require",
    "postgresql+psycopg://syncd@/syncd",
    "postgresql+psycopg://[::1]:5432/syncd",
    "postgresql+psycopg://db.example",
    "postgresql+psycopg://u:a+b@h:5/d%2Fx?application_name=syncd&connect_timeout=3",
    "mysql+pymysql://syncd:p%40ss@db.example:3306/syncd",
    "mysql+pymysql://syncd@db.example/syncd",
    "mysql+pymysql://u:a+b@[::1]:5/d%2Fx",
    "mariadb+pymysql://db.example/syncd",
]


def assert_read_as_sqlalchemy_reads_it(url: str) -> None:
    """A MariaDB URL of the plain form gives its driver the arguments SQLAlchemy's dialect
    gives it."""
    plain = plain_mariadb(url)
    assert plain is not None
    parsed = sa.engine.make_url(url)
    _, expected = parsed.get_dialect()().create_connect_args(parsed)
    assert plain[1] == expected


def sqlalchemy_url_problem(url: str) -> str | None:
    """What SQLAlchemy alone makes of ``url``: whether it parses and its driver imports."""
    try:
        sa.engine.make_url(url).get_dialect().import_dbapi()
    except (sa.exc.ArgumentError, ValueError, sa.exc.NoSuchModuleError, ImportError) as exc:
        return type(exc).__name__
    return None


@pytest.mark.parametrize("url", PLAIN_URLS)
def test_a_plain_database_url_is_read_as_sqlalchemy_reads_it(url: str) -> None:
    assert sqlalchemy_url_problem(url) is None
    assert database_url_problem(url) is None
    assert plain_sqlite_file(url) == sqlite_file(url)
    if url.startswith(("mysql", "mariadb")):
        assert_read_as_sqlalchemy_reads_it(url)
    if url.startswith("postgresql"):
        assert is_plain_postgres(url)
        rendered = sa.engine.make_url(url).set(drivername="postgresql")
        assert conninfo_to_dict(conninfo(url)) == conninfo_to_dict(
            rendered.render_as_string(hide_password=False)
        )


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://syncd@db.example:pg/syncd",
        "postgresql+psycopg://syncd@db.example:\u0665\u0664/syncd",  # int() takes these digits
        "postgresql+psycopg://syncd@db.example:+5/syncd",
        "postgresql+psycopg://h/d?x=1\ny",
        "postgresql+psycopg://syncd@db.example:/syncd",  # SQLAlchemy refuses an empty port
        "sqlite:///x.db?timeout=3",
        "sqlite://",
        "nosuchdb://x/y",
        "not a url",
        "postgresql://db.example/syncd",
    ],
)
def test_any_other_database_url_is_judged_by_sqlalchemy(url: str) -> None:
    assert plain_sqlite_file(url) is None
    assert not is_plain_postgres(url) or sqlalchemy_url_problem(url) is not None
    assert (database_url_problem(url) is None) == (sqlalchemy_url_problem(url) is None)


# Refused by syncd whatever SQLAlchemy makes of the URL: a password cut at its "@", and a
# MariaDB URL without a database.
SYNCDS_OWN = {
    "the password in it holds an @: write it %40, or use password_file",
    "names no database: end it with /DATABASE, syncd's own",
}
URL_PIECES = st.sampled_from(
    ["postgresql+psycopg://", "sqlite:///", "sqlite+pysqlite:///", "mysql+pymysql://",
     "u", ":", "@", "/", "?",
     "[", "]", "%", "5432", "\u0665", "+", "\n", "x=1", "&", "db.example", ":memory:", " "]
)  # fmt: skip


@given(st.lists(URL_PIECES, min_size=1, max_size=8).map("".join))
def test_a_database_url_read_without_sqlalchemy_gets_sqlalchemys_answer(url: str) -> None:
    problem = database_url_problem(url)
    if problem not in SYNCDS_OWN:  # what SQLAlchemy reads but syncd cannot use
        assert (problem is None) == (sqlalchemy_url_problem(url) is None)
    if plain_sqlite_file(url) is not None:
        assert plain_sqlite_file(url) == sqlite_file(url)
    if plain_mariadb(url) is not None:
        assert_read_as_sqlalchemy_reads_it(url)


def test_duplicate_names_are_problems(tmp_path: Path) -> None:
    text = provider("dup") + provider("dup") + webhook() + webhook()
    problems = problems_of(tmp_path, text)
    dup_provider = [p for p in problems if p.key.startswith("providers") and "dup" in p.message]
    dup_webhook = [p for p in problems if p.key.startswith("webhooks") and "ops" in p.message]
    assert dup_provider
    assert dup_webhook


def test_duplicate_name_is_reported_alongside_other_problems(tmp_path: Path) -> None:
    """All at once: a duplicate must not hide behind another problem of the same table."""
    text = provider("dup") + provider("dup", timeout='"soon"')
    problems = problems_of(tmp_path, text)
    assert "providers[1].timeout" in keys(problems)
    assert any(p.key.startswith("providers") and "dup" in p.message for p in problems)


# -- validation: every problem at once ---------------------------------------------------


BROKEN = f"""
[database]
url = "not a url"

[logging]
format = "auto"
level = "loud"

[[providers]]
name = "Shop"
url = "http://panel.example.com/api"
token = {q(TOKEN)}
timeout = "soon"
status_batch_size = 101
dialect = "soap"
low_balance = "-5"
colour = "blue"

[[providers]]
name = "typed"
url = "https://typed.example.com/api"
token = {q(TOKEN)}
status_batch_size = "100"

[[providers]]
name = "dup"
url = "https://a.example.com/api"
token = {q(TOKEN)}

[[providers]]
name = "dup"
url = "https://b.example.com/api"
token = {q(TOKEN)}

[[webhooks]]
name = "ops"
url = "https://hooks.example.com/syncd"
format = "xml"
secret = "not-a-whsec-secret"
events = ["balance.low", "nope.event"]
"""

BROKEN_KEYS = {
    "database.url",
    "logging.level",
    "providers[0].name",
    "providers[0].url",
    "providers[0].timeout",
    "providers[0].status_batch_size",
    "providers[0].dialect",
    "providers[0].low_balance",
    "providers[0].colour",
    "providers[1].status_batch_size",
    "webhooks[0].format",
    "webhooks[0].secret",
    "webhooks[0].events",
}


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_text(tmp_path, BROKEN)
    exc = info.value
    found = keys(exc.problems)
    assert found >= BROKEN_KEYS, f"not reported: {sorted(BROKEN_KEYS - found)}"
    assert any(p.key.startswith("providers") and "dup" in p.message for p in exc.problems)
    assert all(p.key and p.message for p in exc.problems)
    assert exc.source == str(tmp_path / "syncd.toml")
    for problem in exc.problems:
        assert str(problem) in str(exc)  # the summary lists every problem
    assert_no_token(str(exc), *(str(p) for p in exc.problems))


def test_invalid_toml_is_one_problem(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, '[[providers]\nname = "shop"\n')
    (problem,) = problems
    assert "TOML" in problem.message
    assert "line" in problem.message


def test_non_utf8_config_is_one_problem(tmp_path: Path) -> None:
    path = tmp_path / "syncd.toml"
    path.write_bytes(b'[[providers]]\nname = "\xff\xfe"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    assert len(info.value.problems) == 1


# -- through the command line ------------------------------------------------------------


def test_token_env_must_name_a_variable_and_is_never_echoed(tmp_path: Path) -> None:
    # An operator who pastes the token itself into token_env must not see it printed back.
    problems = problems_of(tmp_path, provider(token=None, token_env=q(TOKEN + " ")))
    assert [(p.key, p.message) for p in problems] == [
        ("providers[0].token_env", "must be the name of an environment variable")
    ]


def test_a_wrong_type_is_one_problem_with_a_readable_article(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, provider(name="x").replace('name = "x"', "name = 5"))
    assert [(p.key, p.message) for p in problems] == [("providers[0].name", "must be a string")]
    (batch,) = problems_of(tmp_path, provider(status_batch_size=q("100")))
    assert batch.message == "must be an integer"


@pytest.mark.parametrize("url", ["https://h:abc/x", "ftp://h/x", "hooks.example.com"])
def test_a_bad_webhook_url_is_a_problem(tmp_path: Path, url: str) -> None:
    text = provider() + f'[[webhooks]]\nname = "ops"\nurl = {q(url)}\n'
    assert keys(problems_of(tmp_path, text)) == {"webhooks[0].url"}


def test_a_duration_out_of_range_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, provider(timeout='"999999999d"', give_up_after='"3651d"'))
    assert main(["--config", str(path), "check"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"syncd: {path}: providers[0].timeout: duration too long: '999999999d' (at most 1h)",
        f"syncd: {path}: providers[0].give_up_after: duration too long: '3651d' (at most 3650d)",
    ]


def test_price_guard_and_requests_per_minute_are_read_exactly(tmp_path: Path) -> None:
    config = load_text(tmp_path, provider(price_guard='"12.5%"', requests_per_minute="120"))
    (p,) = config.providers
    assert p.price_guard == Decimal("12.5")
    assert p.requests_per_minute == 120


@pytest.mark.parametrize("value", ["true", "1.5", '"120"'])
def test_a_requests_per_minute_of_the_wrong_type_is_one_problem(tmp_path: Path, value: str) -> None:
    problems = problems_of(tmp_path, provider(requests_per_minute=value))
    assert [p.key for p in problems] == ["providers[0].requests_per_minute"]


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[[providers]]\nname = "shop"\nurl = 5\ntoken = "tok-12345678"\n', "providers[0].url"),
        (provider() + '[[webhooks]]\nname = "ops"\nurl = 5\n', "webhooks[0].url"),
    ],
)
def test_a_url_of_the_wrong_type_is_one_problem(tmp_path: Path, text: str, key: str) -> None:
    problems = problems_of(tmp_path, text)
    assert [(p.key, p.message) for p in problems] == [(key, "must be a string")]


SECRET = "whsec_c2VjcmV0c2VjcmV0c2VjcmV0"


@pytest.mark.parametrize(
    "text",
    [
        provider(dialect=q(TOKEN)),  # the token pasted into another key as well
        provider(timeout=q(TOKEN)),
        provider(token=None, token_env=q(SECRET)),  # a webhook secret where a name goes
        provider()
        + f'[[webhooks]]\nname = "ops"\nurl = "https://hooks.example/x"\nsecret = {q(SECRET)}\n'
        f"format = {q(SECRET)}\n",
    ],
    ids=["token-as-dialect", "token-as-timeout", "whsec-as-env-name", "secret-as-format"],
)
def test_a_config_problem_never_shows_a_token_or_webhook_secret(tmp_path: Path, text: str) -> None:
    problems = problems_of(tmp_path, text)
    for problem in problems:
        assert_no_token(str(problem))
        assert_no_token(str(problem), token=SECRET)
        assert_no_token(str(problem).lower(), token=SECRET.lower()[6:])


def test_a_plain_mysqlclient_url_is_read_as_sqlalchemy_reads_it() -> None:
    """mysqlclient names its arguments otherwise (``passwd``, ``db``)."""
    pytest.importorskip("MySQLdb", reason="mysqlclient is not installed (syncd[mariadb])")
    for url in ("mysql+mysqldb://syncd:p%40ss@db.example:3306/syncd", "mysql+mysqldb://h/d"):
        assert database_url_problem(url) is None
        assert_read_as_sqlalchemy_reads_it(url)
