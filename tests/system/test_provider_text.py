"""Text a provider sends, end to end: what reaches the terminal, the database, the logs and
the webhooks when a provider echoes the token back or sends terminal escape codes.

The provider and the webhook receiver are served by respx inside the process, so any reply
can be scripted; everything else is the real CLI on a real database.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest
import respx

from syncd.cli import main
from syncd.cli.render import overview_text
from syncd.models import JobState, ProviderOverview, WebhookBacklog
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


# -- escape codes ------------------------------------------------------------------------

CLEAR = "\x1b[2J"  # clears the screen
TITLE = "\x1b]0;pwned\x07"  # retitles the terminal window (OSC ... BEL)
SHOWN = ("\\x1b[2J", "\\x1b]0;")  # how they must appear instead


def panel(answers: dict[str, object]) -> Callable[[httpx.Request], httpx.Response]:
    """A provider answering each action (the form's ``action``) with the JSON value that
    ``answers`` holds for it when the request arrives."""

    def answer(request: httpx.Request) -> httpx.Response:
        action = dict(parse_qsl(request.content.decode()))["action"]
        return httpx.Response(200, json=answers[action])

    return answer


def no_control_bytes(text: str) -> bool:
    return "\x1b" not in text and "\x07" not in text


def test_escape_codes_from_a_provider_reach_no_terminal(
    tmp_path: Path, db_url: str, router: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    answers: dict[str, object] = {
        "packages": {"error": f"Maintenance {CLEAR}until {TITLE}noon"},
        "balance": {"balance": "12.50", "currency": f"usd{TITLE}"},
    }
    router.post(PANEL).mock(side_effect=panel(answers))
    config = write_config(tmp_path / "syncd.toml", db_url, PANEL, log_format="console")

    assert run(config, "-v", "sync") == 1
    sync_out, sync_err = capsys.readouterr()
    assert run(config, "status") == 0
    status_out = capsys.readouterr().out
    answers["balance"] = {"balance": "12.50", "currency": "USD"}
    assert run(config, "check") == 0
    check_out = capsys.readouterr().out
    answers["balance"] = {"error": f"Closed {TITLE}"}
    assert run(config, "check") == 1
    check_err = capsys.readouterr().err

    failure = "syncd: catalog job for sim failed: Maintenance \\x1b[2Juntil \\x1b]0;pwned\\x07noon"
    assert failure in sync_err.splitlines()
    assert "[warning  ] job.finished" in sync_err  # the console log stream was on
    log_lines = [line for line in sync_err.splitlines() if "job.finished" in line]
    assert all(shown in log_lines[0] for shown in SHOWN), log_lines
    # A currency is a short code: one carrying escape codes is taken as unknown (the
    # balance is read all the same), and the result quotes it escaped.
    assert (
        "balance sim: 12.5; currency unknown (currency: not a currency code: "
        "'usd\\x1b]0;pwned\\x07')" in sync_out.splitlines()
    )
    assert "FAILING since" in status_out and SHOWN[0] in status_out
    assert "provider sim: ok, balance 12.5 USD" in check_out
    assert check_err == "syncd: check failed: provider sim: Closed \\x1b]0;pwned\\x07\n"
    for shown in (sync_out, sync_err, status_out, check_out, check_err):
        assert no_control_bytes(shown), shown


def test_json_output_escapes_control_characters_by_itself(
    tmp_path: Path, db_url: str, router: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    router.post(PANEL).mock(
        side_effect=panel({"balance": {"error": f"Maintenance {CLEAR}{TITLE}"}})
    )
    config = write_config(tmp_path / "syncd.toml", db_url, PANEL)
    assert run(config, "-v", "sync", "balance") == 1
    assert run(config, "status", "--json") == 0
    out, err = capsys.readouterr()
    log_lines = [line for line in err.splitlines() if line.startswith("{")]

    assert no_control_bytes(out) and all(no_control_bytes(line) for line in log_lines)
    (provider,) = json.loads(out)["providers"]
    assert provider["jobs"]["balance"]["last_error"] == f"Maintenance {CLEAR}{TITLE}"
    finished = [json.loads(line) for line in log_lines if "job.finished" in line]
    assert [line["error"] for line in finished] == [f"Maintenance {CLEAR}{TITLE}"]


def test_a_rejected_order_shows_the_provider_s_reason_escaped(
    tmp_path: Path, db_url: str, router: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    service = {"service": 1, "name": "Likes", "type": "Default", "category": "Instagram"}
    router.post(PANEL).mock(
        side_effect=panel(
            {
                "packages": [{**service, "rate": "0.90", "min": 10, "max": 1000}],
                "add": {"error": f"Bad link {CLEAR}{TITLE}"},
            }
        )
    )
    config = write_config(tmp_path / "syncd.toml", db_url, PANEL)
    assert run(config, "sync", "catalog") == 0
    capsys.readouterr()

    args = ("order", "add", "--provider", "sim", "--package", "1", "--link", "https://x.example")
    assert run(config, *args, "--quantity", "100") == 1
    err = capsys.readouterr().err
    assert err == "syncd: order 1 was rejected: Bad link \\x1b[2J\\x1b]0;pwned\\x07\n"
    assert run(config, "order", "list", "--json") == 0
    listed = capsys.readouterr().out
    assert no_control_bytes(listed)
    assert [o["error"] for o in json.loads(listed)] == [f"Bad link {CLEAR}{TITLE}"]


def test_status_text_escapes_every_field() -> None:
    bad = f"{CLEAR}{TITLE}\n\u202eevil"
    shown = "\\x1b[2J\\x1b]0;pwned\\x07\\x0a\\u202eevil"
    when = datetime(2026, 1, 1, tzinfo=UTC)
    job = JobState("catalog", when, None, when, bad, when)
    provider = ProviderOverview(
        bad, bad, bad, Decimal("1.00"), when, "down", bad, None, 0, 0, {}, (job,)
    )
    text = overview_text([provider], [WebhookBacklog(bad, 1, 0, bad)], now=when)

    assert not any(c in text for c in "\x1b\x07\u202e")
    assert (
        text.count(shown) == 7
    )  # name, url, currency, job error, last error, webhook name and error
    assert len(text.splitlines()) == 10  # no field added a line


def test_a_token_echoed_in_catalog_and_status_texts_reaches_no_output(
    tmp_path: Path, db_url: str, router: respx.MockRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    echo = ENCODED_TOKEN
    package = {"service": 77, "name": f"Pkg {echo}", "type": "Default",
               "category": f"Cat {echo[:12]}", "rate": "1.00", "min": "10", "max": "100",
               "note": {f"k {echo}": [f"v {echo}"]}}  # fmt: skip
    packages: list[object] = [{"service": 1, "name": "Plain", "rate": "1", "min": 1, "max": 2}]
    answers: dict[str, object] = {
        "packages": packages,
        "status": {"5001": {"status": f"In progress {echo}", "remains": "3"}},
        "balance": {"balance": "10.00", "currency": "USD"},
    }
    router.post(PANEL).mock(side_effect=panel(answers))
    hook = router.post(HOOK).mock(return_value=httpx.Response(204))
    hooked = WEBHOOK.replace('["provider.auth_failed"]', '["package.added"]')
    config = write_config(tmp_path / "syncd.toml", db_url, PANEL, token=echo, extra=hooked)
    assert run(config, "sync", "catalog") == 0
    answers["packages"] = [*packages, package]
    assert run(config, "order", "track", "--provider", "sim", "5001") == 0
    assert run(config, "sync") == 0
    assert run(config, "packages", "--json") == 0
    assert run(config, "order", "list", "--json") == 0
    out, err = capsys.readouterr()
    (delivered,) = hook.calls
    assert "Pkg ***" in out and "In progress ***" in out
    for shown in (out, err, delivered.request.content.decode(), database_text(db_url)):
        assert leaked(shown, ENCODED_TOKEN) == [], shown
