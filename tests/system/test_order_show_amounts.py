"""``syncd order show`` prints the amounts of an order's changes as it prints the order's
own charge: shortest and exact, the same on every database. ``syncd changes`` keeps them as
stored."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from syncd.lifecycle import plan_status_batch
from syncd.models import Order
from syncd.plans import StatusPlan
from syncd.provider.replies import parse_statuses
from syncd.storage import Storage
from tests.conftest import write_config
from tests.helpers import syncd

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def answer(storage: Storage, order_id: int, at: datetime, charge: str) -> StatusPlan:
    """One status reply about provider order 501 with ``charge``, written as the sweep does."""
    answers = parse_statuses({"501": {"status": "In progress", "charge": charge}}, [501])

    def plan(rows: list[Order]) -> StatusPlan:
        return plan_status_batch(
            rows, answers, at, base=timedelta(minutes=2), give_up_after=timedelta(days=30)
        )

    return storage.apply_status_answers([order_id], at, plan)


def test_order_show_prints_the_changes_amounts_shortest(
    tmp_path: Path, any_db_url: str, any_storage: Storage
) -> None:
    any_storage.register_providers([("sim", "https://panel.example/api/v2")])
    (order_id,) = any_storage.track_orders("sim", [501], NOW).values()
    answer(any_storage, order_id, NOW + timedelta(minutes=1), "0.04680")
    answer(any_storage, order_id, NOW + timedelta(minutes=2), "0.0500")
    config = write_config(tmp_path / "syncd.toml", any_db_url, "https://panel.example/api/v2")
    shown = syncd(config, "order", "show", str(order_id), "--json")
    assert shown.returncode == 0, shown.stderr
    order = json.loads(shown.stdout)
    assert order["charge"] == "0.05"
    moves = [(c["charge_old"], c["charge_new"]) for c in order["changes"][-2:]]
    assert moves == [(None, "0.0468"), ("0.0468", "0.05")]
    text = syncd(config, "order", "show", str(order_id))
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert any(line.endswith("charge - -> 0.0468") for line in lines), text.stdout
    assert any(line.endswith("  charge 0.0468 -> 0.05") for line in lines), text.stdout
    feed = syncd(config, "changes")
    assert feed.returncode == 0, feed.stderr
    stored = [json.loads(line)["charge_new"] for line in feed.stdout.splitlines()][-2:]
    assert [Decimal(s) for s in stored] == [Decimal("0.0468"), Decimal("0.05")]
    assert stored[1] != "0.05"  # as stored
