"""``syncd status`` reads the last 24 h from the money ledger: a currency switch is no
spend, top-ups and drift are shown apart, and a raised balance.drift is said."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from syncd.cli import main
from syncd.cli.render import overview_text
from syncd.cli.status import read_opened
from syncd.config import load_config
from syncd.jobs.balance import runway_hours
from syncd.simulator import SimulatorServer
from tests.conftest import Rows, write_config


@pytest.fixture
def config(tmp_path: Path, db_url: str, server: SimulatorServer) -> Path:
    return write_config(tmp_path / "syncd.toml", db_url, server.url)


def status(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[dict[str, object], str]:
    capsys.readouterr()
    assert main(["--config", str(config), "status", "--json"]) == 0
    (shown,) = json.loads(capsys.readouterr().out)["providers"]
    assert main(["--config", str(config), "status"]) == 0
    return shown, capsys.readouterr().out


def test_a_currency_switch_from_eur_100_to_usd_50_shows_no_spend(
    config: Path, server: SimulatorServer, sql: Rows, capsys: pytest.CaptureFixture[str]
) -> None:
    server.provider.currency, server.provider.balance = "EUR", Decimal("100.00")
    assert main(["--config", str(config), "sync", "balance"]) == 0
    server.provider.currency, server.provider.balance = "USD", Decimal("50.00")
    assert main(["--config", str(config), "sync", "balance"]) == 0
    # The snapshots alone read the switch as 50 spent.
    snapshots = [
        (datetime.fromisoformat(str(at)).replace(tzinfo=UTC), Decimal(str(amount)))
        for at, amount in sql("SELECT observed_at, balance FROM balance_snapshots ORDER BY id")
    ]
    assert runway_hours(snapshots, datetime.now(UTC)) is not None
    shown, text = status(config, capsys)
    assert shown["ledger_24h"] == {
        "spent": "0", "topups": "0", "drift": "0", "hours": shown["ledger_24h"]["hours"],  # type: ignore[index]
    }  # fmt: skip
    assert shown["runway_hours"] is None and shown["drifting"] is False
    assert "  spent    0 USD in 24 h\n" in text and "drift: raised" not in text


def test_spend_nets_charges_and_refunds_of_the_current_ledger_and_shows_top_ups_and_drift(
    config: Path, server: SimulatorServer, sql: Rows, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(config), "sync", "balance"]) == 0  # opens at 100.00 USD
    now = datetime.now(UTC)
    balance = Decimal("100.00")
    for hours_ago, kind, amount in [
        (30, "charge", "-7.00"),  # before the window: not counted
        (5, "charge", "-10.00"), (4, "refund", "2.50"), (3, "surcharge", "-0.50"),
        (2, "topup", "20.00"), (1, "drift", "-1.25"),
    ]:  # fmt: skip
        balance += Decimal(amount)
        at = (now - timedelta(hours=hours_ago)).strftime("%Y-%m-%d %H:%M:%S.%f")
        sql("INSERT INTO ledger (provider, at, kind, amount, currency, balance_after)"
            " VALUES ('sim', ?, ?, ?, 'USD', ?)", at, kind, amount, str(balance))  # fmt: skip
    opened = (now - timedelta(days=2)).strftime("%Y-%m-%d %H:%M:%S.%f")
    sql(
        "UPDATE providers SET drifting = 1, balance = ?, ledger_opened_at = ?", str(balance), opened
    )
    shown, text = status(config, capsys)
    spend = shown["ledger_24h"]
    assert isinstance(spend, dict)
    assert (spend["spent"], spend["topups"], spend["drift"]) == ("8", "20", "1.25")
    assert shown["drifting"] is True
    assert "  spent    8 USD in 24 h, top-ups 20 USD, drift 1.25 USD; drift: raised" in text
    # 9.25 gone in 24 h (spent and drifted), 110.75 left: the runway follows that rate.
    assert shown["runway_hours"] == str((balance / (Decimal("9.25") / 24)).quantize(Decimal("0.1")))


def test_the_terminal_picture_of_spend_per_day_reads_the_ledger(
    config: Path, server: SimulatorServer, sql: Rows, capsys: pytest.CaptureFixture[str]
) -> None:
    """The 7-day picture a person sees at a terminal: a currency switch is no spend there
    either, where the snapshots' drops would draw 50 spent today."""
    server.provider.currency, server.provider.balance = "EUR", Decimal("100.00")
    assert main(["--config", str(config), "sync", "balance"]) == 0
    server.provider.currency, server.provider.balance = "USD", Decimal("50.00")
    assert main(["--config", str(config), "sync", "balance"]) == 0
    now = datetime.now(UTC)
    loaded = load_config(config)
    report = read_opened(loaded, now, pictures=True)
    (p,) = report.providers
    assert p.ledger_24h is not None and len(p.ledger_24h.by_day) == 7
    assert all(spent == 0 for _, spent in p.ledger_24h.by_day)
    text = overview_text(report.providers, pictures=True, now=now)
    assert "  spent/day   0 0 0 0 0 0 0\n" in text
    # Spend the ledger counts is drawn on its day: an order charged today.
    at = now.replace(tzinfo=None)  # after the ledger opened, today
    sql(
        "INSERT INTO ledger (provider, at, kind, order_id, amount, currency, balance_after) "
        "VALUES ('sim', ?, 'charge', 1, '-1.25', 'USD', '48.75')",
        at.isoformat(" ", "microseconds"),
    )
    report = read_opened(loaded, now, pictures=True)
    assert (
        overview_text(report.providers, pictures=True, now=now).count(
            "  spent/day   0 0 0 0 0 0 1.25\n"
        )
        == 1
    )
    # Read without pictures (a script, --json), no day is read at all.
    (plain,) = read_opened(loaded, now).providers
    assert plain.ledger_24h is not None and plain.ledger_24h.by_day == ()
