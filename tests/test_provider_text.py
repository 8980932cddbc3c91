"""Text a provider sends, end to end: what reaches the terminal, the database, the logs and
the webhooks when a provider echoes the token back.

The provider and the webhook receiver are served by respx inside the process, so any reply
can be scripted; everything else is the real CLI on a real database.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import respx

from syncd.cli import main
from tests.conftest import write_config
from tests.leaks import ENCODED_TOKEN, leaked

PANEL = "https://panel.example/api/v2"
HOOK = "https://hooks.example/syncd"
WEBHOOK = f"""
[[webhooks]]
name = "ops"
url = "{HOOK}"
events = ["provider.auth_failed"]
"""


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as mock:
        yield mock


def run(config: Path, *args: str) -> int:
    return main(["--config", str(config), *args])


def database_text(db_url: str) -> str:
    """Every row of every table, as SQL text."""
    with sqlite3.connect(db_url.removeprefix("sqlite:///")) as conn:
        return "\n".join(conn.iterdump())


def test_a_quoted_piece_of_the_token_reaches_no_output(
    tmp_path: Path, db_url: str, router: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    rejection = {"error": f"Invalid API key {ENCODED_TOKEN[:12]}..."}
    router.post(PANEL).mock(return_value=httpx.Response(200, json=rejection))
    hook = router.post(HOOK).mock(return_value=httpx.Response(204))
    config = write_config(
        tmp_path / "syncd.toml", db_url, PANEL, token=ENCODED_TOKEN, extra=WEBHOOK
    )

    assert run(config, "-v", "sync") == 1
    assert run(config, "status") == 0
    assert run(config, "status", "--json") == 0
    out, err = capsys.readouterr()

    assert "token rejected: Invalid API key ***..." in err  # the one-line error
    assert "job.finished" in err  # the log stream was on
    (delivered,) = hook.calls
    alert = json.loads(delivered.request.content)
    assert alert["type"] == "provider.auth_failed"
    assert "Invalid API key ***..." in alert["data"]["error"]
    database = database_text(db_url)
    assert "Invalid API key ***..." in database  # jobs.last_error, providers.last_error
    for shown in (out, err, delivered.request.content.decode(), database):
        assert leaked(shown, ENCODED_TOKEN) == [], shown
