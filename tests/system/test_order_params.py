"""Order types end to end: ``syncd order add --param``, rows a program inserts with
``params``, and ``syncd packages`` showing what each type needs, against the simulator
over real HTTP and a real SQLite database."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from syncd.cli import main
from syncd.simulator import SimulatedProvider, SimulatorServer
from syncd.simulator.world import SimPackage, default_catalog
from tests.conftest import TOKEN, Rows, write_config

FOLLOWERS = 900  # a Mentions User Followers package added to the catalog for these tests


@pytest.fixture
def simulated() -> SimulatedProvider:
    extra = SimPackage(FOLLOWERS, "Mentions [followers of]", "Mentions User Followers",
                       "Instagram", Decimal("3.00"), 10, 5000)  # fmt: skip
    return SimulatedProvider(token=TOKEN, dialect="key", packages=[*default_catalog(), extra])


@pytest.fixture
def config(tmp_path: Path, db_url: str, server: SimulatorServer) -> Path:
    path = write_config(
        tmp_path / "syncd.toml", db_url, server.url, timeout="1s", extra='dialect = "key"'
    )
    assert main(["--config", str(path), "sync", "catalog"]) == 0
    return path


def add(config: Path, *args: str) -> int:
    return main(["--config", str(config), "order", "add", "--provider", "sim", *args])


def exit_status(config: Path, *args: str) -> int:
    """``syncd order add``'s exit status, whether it returns it or argparse exits."""
    try:
        return add(config, *args)
    except SystemExit as exc:
        return int(str(exc.code))


def sent(server: SimulatorServer) -> list[dict[str, str]]:
    return [dict(c.fields) for c in server.provider.calls if c.action == "add"]


def test_a_param_is_sent_under_the_providers_own_name(
    config: Path, sql: Rows, server: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    assert add(config, "--package", str(FOLLOWERS), "--link", "https://x.example/p",
               "--quantity", "100", "--param", "username=ann") == 0  # fmt: skip
    (fields,) = sent(server)
    assert {k: v for k, v in fields.items() if k not in ("key", "action")} == {
        "service": str(FOLLOWERS), "link": "https://x.example/p", "quantity": "100",
        "username": "ann",
    }  # fmt: skip
    assert sql("SELECT state, params FROM orders") == [("active", '{"username": "ann"}')]
    assert main(["--config", str(config), "order", "show", "1"]) == 0
    assert 'params           {"username": "ann"}' in capsys.readouterr().out


def test_comments_go_out_as_the_key_dialects_comments_field(
    config: Path, tmp_path: Path, server: SimulatorServer
) -> None:
    comments = tmp_path / "comments.txt"
    comments.write_text("Great!\r\nLove it\n\nWow\nNice\nYes\n", encoding="utf-8")
    assert add(config, "--package", "102", "--link", "https://x", "--quantity", "5",
               "--comments-file", str(comments)) == 0  # fmt: skip
    ((fields),) = sent(server)
    assert fields["comments"] == "Great!\nLove it\nWow\nNice\nYes"
    assert "custom_data" not in fields


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--package", "100", "--link", "https://x", "--quantity", "100", "--param", "runs=5",
          "--param", "interval=30"],
         "order refused, nothing queued or sent: params.runs: package 100 (Default) offers no "
         "drip-feed (no dripfeed flag)"),
        (["--package", "100", "--link", "https://x"], "quantity is required"),
        (["--package", str(FOLLOWERS), "--link", "https://x", "--quantity", "100"],
         f"params.username: package {FOLLOWERS} (Mentions User Followers) needs username"),
        (["--package", str(FOLLOWERS), "--link", "https://x", "--quantity", "100",
          "--param", "username=a", "--param", "username=b"],
         "--param username is given twice; nothing was queued or sent"),
        (["--package", "100", "--link", "https://x", "--quantity", "100", "--param", "runs"],
         "argument --param: not NAME=VALUE: 'runs'"),
        (["--package", "100", "--link", "https://x", "--quantity", "100", "--param", "=5"],
         "argument --param: not NAME=VALUE: '=5'"),
        (["--package", "100", "--link", "https://x", "--quantity", "100",
          "--usernames-file", "/nonexistent/names.txt"],
         "argument --usernames-file: cannot read /nonexistent/names.txt: No such file"),
        (["--package", "100", "--link", "https://x", "--quantity", "100",
          "--param-file", "usernames"],
         "argument --param-file: not NAME=VALUE: 'usernames'"),
    ],
)  # fmt: skip
def test_a_bad_param_or_argument_is_one_line_exit_2_and_nothing_queued_or_sent(
    config: Path, sql: Rows, server: SimulatorServer, capsys: pytest.CaptureFixture[str],
    args: list[str], reason: str,
) -> None:  # fmt: skip
    capsys.readouterr()
    assert exit_status(config, *args) == 2
    out, err = capsys.readouterr()
    (line,) = err.splitlines()
    assert out == "" and line.startswith("syncd: ") and reason in line
    assert sql("SELECT count(*) FROM orders") == [(0,)]
    assert sent(server) == []


def test_a_file_option_reads_a_one_per_line_field(
    config: Path, tmp_path: Path, server: SimulatorServer, capsys: pytest.CaptureFixture[str]
) -> None:
    names = tmp_path / "names.txt"
    names.write_text("ann\nbob\n", encoding="utf-8")
    capsys.readouterr()
    # Mentions User Followers takes one username, not a list: refused, naming the field.
    assert add(config, "--package", str(FOLLOWERS), "--link", "https://x", "--quantity",
               "100", "--usernames-file", str(names)) == 2  # fmt: skip
    assert "params.usernames: package 900 (Mentions User Followers) takes no usernames" in (
        capsys.readouterr().err
    )
    assert sent(server) == []


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ("not json", "params: not JSON"),
        ('{"username": ["a"]}', "params.username: must be text, not a list"),
        ("[1]", "params must be a JSON object, not a list"),
        ('{"username": "ann", "runs": 2}', f"params.runs: package {FOLLOWERS} (Mentions User"),
    ],
)
def test_a_row_with_bad_params_is_rejected_alone_and_the_next_is_sent(
    config: Path, sql: Rows, server: SimulatorServer, params: str, reason: str
) -> None:
    insert = (
        "INSERT INTO orders (provider, service_id, link, quantity, params) VALUES (?, ?, ?, ?, ?)"
    )
    sql(insert, "sim", FOLLOWERS, "https://x.example/bad", 100, params)
    sql(insert, "sim", FOLLOWERS, "https://x.example/good", 100, '{"username": "bob"}')
    assert main(["--config", str(config), "sync", "orders"]) == 0
    (bad, bad_error), (good, _) = sql("SELECT state, error FROM orders ORDER BY id")
    assert (bad, good) == ("rejected", "active")
    assert reason in str(bad_error) and "\n" not in str(bad_error)
    (fields,) = sent(server)
    assert fields["link"] == "https://x.example/good" and fields["username"] == "bob"


def test_packages_shows_each_type_and_what_it_needs(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["--config", str(config), "packages"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("refill cancel  needs")
    row = {line.split()[1]: line for line in lines[1:]}
    assert row["102"].endswith("comments (1 per unit)")
    assert row[str(FOLLOWERS)].endswith("username")
    assert row["100"].endswith(" -")


SUBSCRIPTION = 154  # the simulator's Subscriptions package


def test_a_subscription_expiring_in_the_past_is_rejected_before_sending(
    config: Path, sql: Rows, server: SimulatorServer
) -> None:
    insert = "INSERT INTO orders (provider, service_id, params) VALUES (?, ?, ?)"
    past = '{"username": "ann", "min": 100, "max": 200, "expiry": "01/01/2020"}'
    sql(insert, "sim", SUBSCRIPTION, past)
    sql(insert, "sim", SUBSCRIPTION, '{"username": "bob", "min": 100, "max": 200}')
    assert main(["--config", str(config), "sync", "orders"]) == 0
    (bad, bad_error), (good, _) = sql("SELECT state, error FROM orders ORDER BY id")
    assert (bad, good) == ("rejected", "active")
    assert "params.expiry" in str(bad_error)  # the provider's own refusal names no field
    (fields,) = sent(server)  # only the good one went out
    assert fields["username"] == "bob"
