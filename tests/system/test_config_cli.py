"""A broken config or command line, as the syncd command reports it: one line per problem, exit
status 2, nothing opened.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import syncd.cli.commands
import syncd.config
import syncd.jobs.runner
import syncd.logs
from syncd.cli import main
from syncd.config import load_config
from syncd.errors import ConfigError, ConfigProblem
from tests.unit.test_config import assert_no_token, provider, q, write


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[object]:
    """A clean environment, no network, and logging set up without touching the process.

    Returns the list of ``make_client`` calls, which must stay empty.
    """
    for var in ("SYNCD_CONFIG", "CREDENTIALS_DIRECTORY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    relative, _etc = syncd.config.DEFAULT_LOCATIONS
    monkeypatch.setattr(
        syncd.config, "DEFAULT_LOCATIONS", (relative, tmp_path / "etc" / "syncd.toml")
    )
    monkeypatch.setattr(syncd.logs, "configure", lambda **_kwargs: None)
    clients: list[object] = []

    def no_client(provider: object) -> object:
        clients.append(provider)
        raise AssertionError("no provider may be contacted")

    monkeypatch.setattr(syncd.jobs.runner, "make_client", no_client)
    return clients


def broken_cli_config(tmp_path: Path, db: Path) -> Path:
    text = f"""
[database]
url = {q(f"sqlite:///{db}")}

[logging]
level = "loud"

{provider("Local", "http://127.0.0.1:9/api", timeout='"soon"', status_batch_size="101")}
{provider("other", "http://panel.example.com/api", dialect='"soap"')}
"""
    return write(tmp_path, text, "broken.toml")


def expected_problems(path: Path) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    return info.value.problems


@pytest.mark.parametrize(
    "argv",
    [["sync", "catalog"], ["sync"], ["sync", "--provider", "local"], ["check"], ["status"]],
)
def test_cli_broken_config_exits_2_with_one_line_per_problem(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    cli_env: list[object],
    argv: list[str],
) -> None:
    db = tmp_path / "state.db"
    path = broken_cli_config(tmp_path, db)
    problems = expected_problems(path)
    assert len(problems) >= 5

    code = main(["--config", str(path), *argv])

    out, err = capsys.readouterr()
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == len(problems)
    for line, problem in zip(lines, problems, strict=True):
        assert line.startswith("syncd:")
        assert problem.key in line
    assert "Traceback" not in err
    assert out == ""  # check did not get as far as "config ...: ok"
    assert_no_token(out, err)
    assert not db.exists()
    assert list(tmp_path.glob("state.db*")) == []
    assert cli_env == []  # no provider was contacted


def test_cli_uses_syncd_config_from_the_environment(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    cli_env: list[object],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = tmp_path / "state.db"
    path = broken_cli_config(tmp_path, db)
    monkeypatch.setenv("SYNCD_CONFIG", str(path))
    assert main(["sync"]) == 2
    err = capsys.readouterr().err
    assert "providers[0].timeout" in err
    assert not db.exists()


def test_cli_invalid_toml_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cli_env: list[object]
) -> None:
    path = write(tmp_path, "[[providers]\n", "broken.toml")
    assert main(["--config", str(path), "sync", "catalog"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    (line,) = err.splitlines()
    assert line.startswith("syncd:")
    assert str(path) in line
    assert "Traceback" not in err


def test_cli_missing_config_exits_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cli_env: list[object]
) -> None:
    missing = tmp_path / "missing.toml"
    assert main(["--config", str(missing), "check"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("syncd:")
    assert str(missing) in line


def test_cli_no_config_anywhere_exits_2(
    capsys: pytest.CaptureFixture[str], cli_env: list[object]
) -> None:
    assert main(["sync"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("syncd:")


def test_cli_bad_database_url_exits_2_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cli_env: list[object]
) -> None:
    text = '[database]\nurl = "postgresql+psycopg://syncd@db.example:pg/syncd"\n' + provider()
    path = write(tmp_path, text, "bad-db.toml")
    assert main(["--config", str(path), "sync"]) == 2
    err = capsys.readouterr().err
    (line,) = err.splitlines()
    assert line.startswith("syncd:")
    assert "database.url" in line


@pytest.mark.parametrize(
    ("argv", "mentions"),
    [
        (["sync", "nope"], "nope"),
        (["frobnicate"], "frobnicate"),
        (["sync", "--bogus"], "--bogus"),
        ([], "COMMAND"),
    ],
)
def test_cli_bad_arguments_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], cli_env: list[object], argv: list[str], mentions: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    out, err = capsys.readouterr()
    (line,) = err.splitlines()
    assert line.startswith("syncd:")
    assert mentions in line
    assert out == ""


def test_cli_unknown_provider_exits_2_before_opening_the_database(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], cli_env: list[object]
) -> None:
    db = tmp_path / "state.db"
    text = f"[database]\nurl = {q(f'sqlite:///{db}')}\n\n" + provider(
        "local", "http://127.0.0.1:9/api"
    )
    path = write(tmp_path, text, "valid.toml")
    load_config(path, environ={})  # the config itself is valid

    code = main(["--config", str(path), "sync", "catalog", "--provider", "elsewhere"])

    out, err = capsys.readouterr()
    assert code == 2
    (line,) = err.splitlines()
    assert line.startswith("syncd:")
    assert "elsewhere" in line
    assert "Traceback" not in err
    assert_no_token(out, err)
    assert not db.exists()
    assert list(tmp_path.glob("state.db*")) == []
    assert cli_env == []
