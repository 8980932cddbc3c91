"""The price guard over real HTTP: an order whose package costs more than it allows is
held ``queued`` (one ``order.held`` alert, not one per pass) and goes out by itself once
the rate falls or its ``max_rate`` rises; ``price_guard`` does the same against the rate
quoted when the order was first judged."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.cli import main
from syncd.lifecycle import HELD, check_order, price_hold
from syncd.models import Order, OrderState, Package, StoredPackage
from syncd.plans import Verdict
from syncd.simulator import SimulatorServer
from tests.conftest import Rows, write_config

SERVICE = 100  # the simulator's package 100 costs 0.9000 per 1000


def configured(tmp_path: Path, db_url: str, server: SimulatorServer, extra: str = "") -> Path:
    config = write_config(tmp_path / "syncd.toml", db_url, server.url, extra=extra)
    assert sync(config, "catalog") == 0
    return config


def sync(config: Path, job: str = "orders") -> int:
    return main(["--config", str(config), "sync", job])


def queue(sql: Rows, **values: object) -> int:
    row = {"provider": "sim", "service_id": SERVICE, "link": "https://x.example/p",
           "quantity": 100, "state": "queued", **values}  # fmt: skip
    sql(
        f"INSERT INTO orders ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
        *row.values(),
    )
    ((order_id,),) = sql("SELECT max(id) FROM orders")
    assert isinstance(order_id, int)
    return order_id


def held_alerts(sql: Rows) -> list[dict[str, object]]:
    return [
        json.loads(str(payload))
        for (payload,) in sql("SELECT payload FROM alerts WHERE event = 'order.held' ORDER BY id")
    ]


def test_max_rate_below_the_rate_holds_the_order_with_one_alert(
    tmp_path: Path, db_url: str, server: SimulatorServer, sql: Rows
) -> None:
    config = configured(tmp_path, db_url, server)
    order_id = queue(sql, max_rate="0.85")

    for _ in range(3):  # every pass finds it held; one alert in all
        assert sync(config) == 0
    (state, error, quoted), = sql("SELECT state, error, quoted_rate FROM orders")  # fmt: skip
    assert state == "queued"
    assert error == f"{HELD}the package's rate 0.9 is above the order's max_rate 0.85"
    assert quoted == "0.9000"  # the rate syncd first judged it at
    assert server.provider.count("add") == 0
    (alert,) = held_alerts(sql)
    assert alert["data"] == {
        "order_id": order_id, "service_id": SERVICE, "rate": "0.9000", "max_rate": "0.85",
        "quoted_rate": None, "reason": "the package's rate 0.9 is above the order's max_rate 0.85",
    }  # fmt: skip

    # The consumer raises its limit: the next pass sends it.
    sql("UPDATE orders SET max_rate = '0.90' WHERE id = ?", order_id)
    assert sync(config) == 0
    assert sql("SELECT state, error FROM orders") == [("active", None)]
    assert server.provider.count("add") == 1
    assert len(held_alerts(sql)) == 1


def test_a_rate_that_falls_releases_a_held_order(
    tmp_path: Path, db_url: str, server: SimulatorServer, sql: Rows
) -> None:
    config = configured(tmp_path, db_url, server)
    queue(sql, max_rate="0.5")
    assert sync(config) == 0
    assert sql("SELECT state FROM orders") == [("queued",)]

    server.provider.set_rate(SERVICE, Decimal("0.45"))
    assert sync(config, "catalog") == 0
    assert sync(config) == 0
    assert sql("SELECT state FROM orders") == [("active",)]


def test_price_guard_holds_an_order_whose_rate_rose_past_the_quote(
    tmp_path: Path,
    db_url: str,
    server: SimulatorServer,
    sql: Rows,
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = configured(tmp_path, db_url, server, extra='price_guard = "10%"')
    # The storefront quoted the price its customer paid.
    queue(sql, quoted_rate="0.80")
    assert sync(config) == 0  # 0.90 is 12.5 % above 0.80
    (state, error), = sql("SELECT state, error FROM orders")  # fmt: skip
    assert state == "queued"
    assert error == f"{HELD}the package's rate 0.9 is more than 10% above the quoted rate 0.8"
    assert len(held_alerts(sql)) == 1

    capsys.readouterr()
    assert main(["--config", str(config), "status", "--json"]) == 0
    (shown,) = json.loads(capsys.readouterr().out)["providers"]
    assert shown["held"] == 1 and shown["orders"]["queued"] == 1
    assert main(["--config", str(config), "status"]) == 0
    assert "1 queued (1 held by the price guard)" in capsys.readouterr().out

    server.provider.set_rate(SERVICE, Decimal("0.88"))  # 10 % above 0.80: allowed
    assert sync(config, "catalog") == 0
    assert sync(config) == 0
    assert sql("SELECT state, quoted_rate FROM orders") == [("active", "0.80")]


def test_price_guard_quotes_the_rate_it_first_judged_an_order_at(
    tmp_path: Path, db_url: str, server: SimulatorServer, sql: Rows
) -> None:
    """An order waiting for funds keeps the rate of its first judging as its quote: a
    rise while it waits is held, not paid."""
    config = configured(tmp_path, db_url, server, extra='price_guard = "5%"')
    server.provider.balance = Decimal("0.01")
    assert sync(config, "balance") == 0
    queue(sql)
    assert sync(config) == 0
    assert sql("SELECT state, quoted_rate FROM orders") == [("queued", "0.9000")]

    server.provider.set_rate(SERVICE, Decimal("1.00"))
    server.provider.balance = Decimal("100")
    assert sync(config, "catalog") == 0
    assert sync(config, "balance") == 0
    assert sync(config) == 0
    (state, error), = sql("SELECT state, error FROM orders")  # fmt: skip
    assert state == "queued" and str(error).startswith(HELD)
    assert server.provider.count("add") == 0


def test_without_a_guard_a_risen_rate_is_paid(
    tmp_path: Path, db_url: str, server: SimulatorServer, sql: Rows
) -> None:
    config = configured(tmp_path, db_url, server)
    queue(sql, quoted_rate="0.10")
    assert sync(config) == 0
    assert sql("SELECT state FROM orders") == [("active",)]


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"max_rate": "cheap"}, "unreadable row: max_rate"),
        ({"max_rate": "-1"}, "max_rate must not be negative"),
        ({"quoted_rate": "-0.5"}, "quoted_rate must not be negative"),
        ({"max_rate": 1e400}, "unreadable row: max_rate"),
    ],
)
def test_an_odd_price_from_a_consumer_rejects_that_order_alone(
    tmp_path: Path, db_url: str, server: SimulatorServer, sql: Rows,
    values: dict[str, object], error: str,
) -> None:  # fmt: skip
    config = configured(tmp_path, db_url, server, extra='price_guard = "10%"')
    odd = queue(sql, **values)
    fine = queue(sql)
    assert sync(config) == 0
    rows = dict((i, (s, e)) for i, s, e in sql("SELECT id, state, error FROM orders"))
    assert rows[odd][0] == "rejected" and error in str(rows[odd][1])
    assert rows[fine] == ("active", None)


# -- the rule itself ----------------------------------------------------------------------

rates = st.decimals(min_value=0, max_value=1000, places=4, allow_nan=False)
guards = st.one_of(st.none(), st.decimals(min_value="0.01", max_value=1000, places=2))


def order(max_rate: Decimal | None, quoted: Decimal | None) -> Order:
    return Order(
        id=1, provider="p", provider_order_id=None, service_id=1, link="l", quantity=10,
        custom_data=None, state=OrderState.QUEUED, status=None, status_raw=None, charge=None,
        start_counter=None, remains=None, currency=None, error=None, created_at=None,
        max_rate=max_rate, quoted_rate=quoted,
    )  # fmt: skip


@given(rates, rates, st.one_of(st.none(), rates), st.one_of(st.none(), rates), guards)
def test_a_dearer_rate_is_never_let_through_where_a_cheaper_one_was_held(
    low: Decimal, high: Decimal, max_rate: Decimal | None, quoted: Decimal | None,
    guard: Decimal | None,
) -> None:  # fmt: skip
    """Held is monotonic in the rate: a rate above one that is held is held too, and
    raising max_rate never holds an order that was not held."""
    low, high = sorted((low, high))
    o = order(max_rate, quoted)
    if price_hold(o, low, guard) is not None:
        assert price_hold(o, high, guard) is not None
    if max_rate is not None:
        assert (price_hold(o, high, guard) is not None) is (high > max_rate)
        raised = order(max_rate + 1, quoted)
        assert price_hold(o, high, guard) is not None or price_hold(raised, high, guard) is None
    elif guard is None or quoted is None:
        assert price_hold(o, high, guard) is None  # nothing to hold against


@given(rates, guards)
def test_an_order_first_judged_is_never_held_by_the_guard(
    rate: Decimal, guard: Decimal | None
) -> None:
    """Without a quote yet, the rate it is judged at becomes its quote: no hold."""
    package = StoredPackage(
        Package(service_id=1, name="n", type="Default", category="c", rate=rate, min=1, max=100),
        active=True,
        removed_at=None,
    )
    decision = check_order(order(None, None), package, None, guard)
    assert decision.verdict is Verdict.SEND and decision.rate == rate
