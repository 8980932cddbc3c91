"""`syncd migrate` creates the schema or brings it to this syncd's revision, saying which
in one line; the reading commands neither migrate nor create anything."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from syncd.storage.engine import current_revision, migrate
from syncd.storage.migrations import HEAD
from tests.conftest import write_config
from tests.helpers import sql, syncd

OLDER = "0005"
READING = [
    ["changes"],
    ["changes", "--follow"],
    ["status"],
    ["report"],
    ["order", "list"],
    ["order", "show", "1"],
    ["packages"],
]


def _config(tmp_path: Path, url: str) -> Path:
    return write_config(tmp_path / "syncd.toml", url, "https://panel.example/api/v2")


def _revision(url: str) -> str | None:
    engine = sa.create_engine(url)
    try:
        return current_revision(engine)
    finally:
        engine.dispose()


def _migrate_to(url: str, revision: str) -> None:
    engine = sa.create_engine(url)
    try:
        migrate(engine, to=revision)
    finally:
        engine.dispose()


def test_a_new_database_is_created_and_a_second_run_finds_nothing_to_do(
    tmp_path: Path, any_db_url: str
) -> None:
    config = _config(tmp_path, any_db_url)

    created = syncd(config, "migrate")
    assert (created.returncode, created.stderr) == (0, "")
    assert created.stdout == f"created the schema at revision {HEAD}\n"
    assert _revision(any_db_url) == HEAD

    again = syncd(config, "migrate")
    assert (again.returncode, again.stderr) == (0, "")
    assert again.stdout == f"already at revision {HEAD}: nothing to migrate\n"


def test_an_older_schema_is_migrated_and_says_from_which_revision(
    tmp_path: Path, any_db_url: str
) -> None:
    _migrate_to(any_db_url, OLDER)
    migrated = syncd(_config(tmp_path, any_db_url), "migrate")
    assert (migrated.returncode, migrated.stderr) == (0, "")
    assert migrated.stdout == f"migrated from revision {OLDER} to {HEAD}\n"
    assert _revision(any_db_url) == HEAD


def test_migrate_registers_no_provider(tmp_path: Path, any_db_url: str) -> None:
    assert syncd(_config(tmp_path, any_db_url), "migrate").returncode == 0
    assert sql(any_db_url, "SELECT count(*) FROM providers") == [(0,)]


def test_a_schema_newer_than_this_syncd_is_left_alone_with_one_line(
    tmp_path: Path, any_db_url: str
) -> None:
    _migrate_to(any_db_url, HEAD)
    sql(any_db_url, "UPDATE alembic_version SET version_num = '0999'")
    for command in (["migrate"], ["status"]):
        result = syncd(_config(tmp_path, any_db_url), *command)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.startswith("syncd: the database ")
        assert result.stderr.endswith(
            f" is at schema revision 0999, newer than this syncd knows ({HEAD}): a newer "
            "syncd migrated it; run that version\n"
        )
    assert _revision(any_db_url) == "0999"


@pytest.mark.parametrize("command", READING, ids=" ".join)
def test_a_reading_command_on_a_path_with_no_database_creates_no_file(
    tmp_path: Path, command: list[str]
) -> None:
    missing = tmp_path / "typo.db"
    result = syncd(_config(tmp_path, f"sqlite:///{missing}"), *command)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"syncd: no database at {missing}: check database.url, or create it with syncd migrate\n"
    )
    assert list(tmp_path.iterdir()) == [tmp_path / "syncd.toml"]


@pytest.mark.parametrize("command", READING, ids=" ".join)
def test_a_reading_command_on_an_older_schema_says_to_migrate_and_changes_nothing(
    tmp_path: Path, any_db_url: str, command: list[str]
) -> None:
    _migrate_to(any_db_url, OLDER)
    result = syncd(_config(tmp_path, any_db_url), *command)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("syncd: the database ")
    assert result.stderr.endswith(
        f" is at schema revision {OLDER}, this syncd needs {HEAD}: run syncd migrate as the "
        "role that owns the schema\n"
    )
    assert _revision(any_db_url) == OLDER


def test_a_reading_command_on_a_database_without_the_schema_says_to_migrate(
    tmp_path: Path, any_db_url: str
) -> None:
    if any_db_url.startswith("sqlite"):
        sql(any_db_url, "CREATE TABLE other (x INTEGER)")  # some other program's file
    result = syncd(_config(tmp_path, any_db_url), "changes")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.endswith(
        " holds no syncd schema: run syncd migrate (or syncd run) to create it\n"
    )
    assert _revision(any_db_url) is None
