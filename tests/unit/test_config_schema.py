"""The config dataclasses are the one description of the configuration: the example file
and the generated reference are checked against them, key by key."""

from __future__ import annotations

import dataclasses
import re
import tomllib
import typing
from pathlib import Path
from typing import Any, Literal

import pytest

from syncd.config import Config, load_config, parse_config
from syncd.config.readers import Choice, Table, Tables, known_keys, settings
from syncd.config.reference import main, render

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.toml"
REFERENCE = ROOT / "docs" / "configuration.md"
TOKEN = "tok-schema-5f0c2a91d7"
_HEADER = re.compile(r"\[\[?(\w+)\]\]?")
_COMMENTED_KEY = re.compile(r"#\s?(\w+)\s*=\s*\S")


def sections() -> dict[str, type[Any]]:
    """Each TOML table name and the dataclass it is read into."""
    found: dict[str, type[Any]] = {}
    for f, s in settings(Config):
        assert isinstance(s.kind, Table | Tables)
        found[f.name] = s.kind.cls
    return found


def example_keys() -> dict[str, list[str]]:
    """The keys the example writes in each table, commented out or not, in order."""
    keys: dict[str, list[str]] = {}
    section = ""
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        text = line.split(" #")[0].strip() if not line.startswith("#") else line.strip()
        if header := _HEADER.fullmatch(text):
            section = header.group(1)
            keys.setdefault(section, [])
        elif (key := _COMMENTED_KEY.match(text) or re.match(r"(\w+)\s*=", text)) is not None:
            keys.setdefault(section, []).append(key.group(1))
    return keys


def reference_keys() -> dict[str, list[str]]:
    """The keys the reference has a row for, in each table, in order."""
    keys: dict[str, list[str]] = {}
    section = ""
    for line in REFERENCE.read_text(encoding="utf-8").splitlines():
        if header := re.fullmatch(r"## `\[\[?(\w+)\]\]?`", line):
            section = header.group(1)
            keys[section] = []
        elif row := re.match(r"\| `(\w+)` \|", line):
            keys.setdefault(section, []).append(row.group(1))
    return keys


def load_example(tmp_path: Path) -> Config:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "cheapsmm.token").write_text(f"{TOKEN}\n", encoding="utf-8")
    return load_config(EXAMPLE, environ={"CREDENTIALS_DIRECTORY": str(creds)})


# -- the schema itself -------------------------------------------------------------------


@pytest.mark.parametrize("cls", [Config, *sections().values()], ids=lambda c: c.__name__)
def test_a_literal_type_is_read_as_a_choice_of_its_own_values(cls: type[Any]) -> None:
    hints = typing.get_type_hints(cls)
    for f, s in settings(cls):
        if typing.get_origin(hints[f.name]) is Literal:
            assert isinstance(s.kind, Choice), f.name
            assert s.kind.choices == typing.get_args(hints[f.name]), f.name


@pytest.mark.parametrize("cls", [Config, *sections().values()], ids=lambda c: c.__name__)
def test_every_setting_has_a_one_line_meaning(cls: type[Any]) -> None:
    for f, s in settings(cls):
        assert s.doc.strip() and "\n" not in s.doc and "|" not in s.doc, f.name


def test_config_fields_are_its_tables_and_the_file_it_came_from() -> None:
    read = {f.name for f, _ in settings(Config)}
    assert {f.name for f in dataclasses.fields(Config)} - read == {"source"}


def test_a_key_left_out_takes_the_default_its_field_declares() -> None:
    raw = {"providers": [{"name": "shop", "url": "https://p.example/api", "token": TOKEN}]}
    config = parse_config(raw, source="(test)", environ={})
    read = {"database": config.database, "logging": config.logging, "cluster": config.cluster,
            "metrics": config.metrics, "providers": config.providers[0]}  # fmt: skip
    for name, value in read.items():
        for f, _ in settings(sections()[name]):
            if f.default is not dataclasses.MISSING:
                assert getattr(value, f.name) == f.default, f"{name}.{f.name}"


# -- config.example.toml -----------------------------------------------------------------


@pytest.mark.parametrize("section", sections())
def test_the_example_writes_every_key_of_each_table(section: str) -> None:
    written = example_keys().get(section, [])
    missing = [k for k in known_keys(sections()[section]) if k not in written]
    assert not missing, f"[{section}] does not show {missing}"


def test_the_example_writes_no_key_that_does_not_exist() -> None:
    found = example_keys()
    assert set(found) <= {"", *sections()}
    assert found.get("", []) == []  # nothing before the first table
    for section, keys in found.items():
        if section:
            unknown = set(keys) - set(known_keys(sections()[section]))
            assert not unknown, f"[{section}] shows keys that do not exist: {sorted(unknown)}"


def test_a_value_the_example_sets_is_the_default_wherever_there_is_one(tmp_path: Path) -> None:
    """The example says it lists every key with its default: a value it sets (not commented
    out) of a key that has a default must be that default."""
    config = load_example(tmp_path)
    raw = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    checked = 0
    for section, cls in sections().items():
        table = raw.get(section, {})
        table, value = (table[0], getattr(config, section)[0]) if isinstance(table, list) else (
            table, getattr(config, section))  # fmt: skip
        for f, s in settings(cls):
            if f.default in (dataclasses.MISSING, None):
                continue  # required, or off unless set: the example shows a sample value
            if any(key in table for key in s.kind.keys(f.name)):
                assert getattr(value, f.name) == f.default, f"{section}.{f.name}"
                checked += 1
    assert checked >= 12


# -- docs/configuration.md ---------------------------------------------------------------


def test_the_reference_is_generated_from_the_schema() -> None:
    assert REFERENCE.read_text(encoding="utf-8") == render(), (
        "docs/configuration.md is stale: python -m syncd.config.reference > docs/configuration.md"
    )


def test_the_reference_has_one_row_per_key_in_schema_order() -> None:
    assert reference_keys() == {name: known_keys(cls) for name, cls in sections().items()}


def test_the_reference_says_how_it_is_regenerated() -> None:
    assert "python -m syncd.config.reference > docs/configuration.md" in render()


def test_the_generator_prints_the_reference(capsys: pytest.CaptureFixture[str]) -> None:
    main()
    assert capsys.readouterr().out == render()
