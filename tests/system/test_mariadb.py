"""What only MariaDB needs: its sessions set up whatever the server's defaults, a server
with odd defaults, a consumer's row lock, a server too old, values that do not fit.

The storage tests that hold for every engine run on MariaDB through ``any_db_url``; these
are the ones about MariaDB's own ways."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from unittest.mock import patch

import pytest
import sqlalchemy as sa

from syncd.errors import StorageError
from syncd.lifecycle import finish
from syncd.models import Balance, OrderState
from syncd.plans import BalancePlan, Submission, SubmitOutcome, Verdict
from syncd.storage import Storage, open_storage
from syncd.storage.backends import mariadb
from syncd.storage.values import read_time
from tests.conftest import mariadb_database, own_mariadb_server
from tests.helpers import claim_one

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
EMOJI_LINK = "https://instagram.com/p/\U0001f680\U0001f525-ok?x=\u00e9"
COMMENTS = "\n".join(f"comment {n} \U0001f44d" for n in range(5000))  # about 90 kB


@pytest.fixture
def maria() -> Iterator[Storage]:
    with mariadb_database() as url:
        storage = open_storage(url, busy_timeout=0.2)
        storage.register_providers([("sim", "https://panel.example/v2")])
        yield storage
        storage.close()


def settings(storage: Storage) -> dict[str, str]:
    with storage.engine.connect() as conn:
        row = conn.exec_driver_sql(
            "SELECT @@session.time_zone, @@session.sql_mode, @@session.tx_isolation,"
            " @@session.idle_transaction_timeout, @@session.innodb_lock_wait_timeout"
        ).one()
    return dict(zip(("zone", "mode", "isolation", "idle", "wait"), map(str, row), strict=True))


def a_round_trip(storage: Storage) -> None:
    """An order a consumer inserts in a session of its own (the server's defaults), claimed
    and sent through syncd: the emoji link and 90 kB of comments come back whole, the
    created time is UTC, and a balance keeps its twelve places."""
    engine = sa.create_engine(storage.engine.url)  # not syncd's connection setup
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO orders (provider, service_id, link, quantity, custom_data)"
            " VALUES ('sim', 100, %s, 100, %s)",
            (EMOJI_LINK, COMMENTS),
        )
    engine.dispose()
    claimed = claim_one(storage, "sim", after=0, only=None, owner="me", deadline=NOW, now=NOW,
                        decide=lambda order, *_: Submission(Verdict.SEND))  # fmt: skip
    assert claimed is not None
    order, _ = claimed
    assert (order.link, order.custom_data) == (EMOJI_LINK, COMMENTS)
    storage.finish_submission(
        order.id, "me", SubmitOutcome(OrderState.ACTIVE, 900), now=NOW, alert=None, plan=finish
    )
    stored = storage.order(order.id)
    assert stored is not None and (stored.state, stored.provider_order_id) == (
        OrderState.ACTIVE, 900)  # fmt: skip
    balance = Balance(Decimal("123456789012.123456789012"), "USD")
    storage.apply_balance("sim", lambda *_: BalancePlan("sim", NOW, balance, snapshot=True))
    with storage.engine.connect() as conn:
        kept = conn.exec_driver_sql("SELECT balance FROM providers WHERE name = 'sim'").scalar()
        created, clock = conn.execute(
            sa.select(sa.text("created_at"), storage.backend.clock()).select_from(sa.text("orders"))
        ).one()
    assert kept == balance.amount
    made, now = read_time(created), read_time(clock)
    assert made is not None and now is not None
    assert abs(now - made) < timedelta(minutes=1)  # UTC both, whatever the server's zone


def test_every_session_is_set_up_whatever_the_server_says(maria: Storage) -> None:
    got = settings(maria)
    assert got["zone"] == "+00:00"
    assert {"STRICT_ALL_TABLES", "ANSI_QUOTES", "NO_ZERO_DATE"} <= set(got["mode"].split(","))
    assert got["isolation"] == "READ-COMMITTED"
    assert got["idle"] == "10"  # a frozen syncd lets go of the lease rows within 10 s
    assert got["wait"] == "1"  # the busy timeout (0.2 s), in MariaDB's whole seconds


def test_an_order_goes_through_with_its_emoji_its_comments_and_exact_money(
    maria: Storage,
) -> None:
    a_round_trip(maria)


def test_a_server_in_another_zone_with_a_lax_sql_mode_and_latin1_changes_nothing() -> None:
    odd = ("--default-time-zone=+05:30", "--sql-mode=", "--character-set-server=latin1",
           "--collation-server=latin1_swedish_ci")  # fmt: skip
    with own_mariadb_server(*odd) as server:
        storage = open_storage(server.url, busy_timeout=0.2)
        try:
            storage.register_providers([("sim", "https://panel.example/v2")])
            assert settings(storage)["zone"] == "+00:00"
            a_round_trip(storage)
        finally:
            storage.close()


def test_a_row_naming_the_provider_with_a_trailing_space_is_rejected_unsent(
    maria: Storage,
) -> None:
    """MariaDB's collations compare 'sim ' equal to 'sim' (the foreign key lets it in,
    and the claim's WHERE reads it with sim's orders); syncd reads the text as it is, so
    it once sent such an order to sim, then found it named no provider it knew and set
    it missing, placed and untracked."""
    with maria.engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO orders (provider, service_id, link, quantity)"
            " VALUES ('sim ', 100, 'https://x.example/p', 100)"
        )
    claimed = claim_one(maria, "sim", after=0, only=None, owner="me", deadline=NOW, now=NOW,
                        decide=lambda order, *_: Submission(Verdict.SEND))  # fmt: skip
    assert claimed is not None
    order, verdict = claimed
    assert verdict.verdict is Verdict.REJECT
    stored = maria.order(order.id)
    assert stored is not None and stored.state is OrderState.REJECTED
    assert stored.error == "unknown provider 'sim ' (not in the configuration); nothing was sent"


def test_money_that_does_not_fit_is_refused_not_rounded(maria: Storage) -> None:
    def write(amount: str) -> None:
        plan = BalancePlan("sim", NOW, Balance(Decimal(amount), "USD"), snapshot=True)
        maria.apply_balance("sim", lambda *_: plan)

    for amount in ("0.1234567890123", "1234567890123456789"):
        with pytest.raises(StorageError, match="does not fit the database's money column"):
            write(amount)
    write("999999999999999999.999999999999")
    with maria.engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT balance FROM balance_snapshots").all()
    assert rows == [(Decimal("999999999999999999.999999999999"),)]  # nothing else written


def test_a_consumer_s_row_lock_is_waited_for_then_fails_the_write_in_one_line(
    maria: Storage,
) -> None:
    maria.record_job_start("sim", "catalog", NOW)
    holder = sa.create_engine(maria.engine.url)
    with holder.connect() as conn:
        conn.exec_driver_sql("SELECT * FROM jobs FOR UPDATE").all()
        with pytest.raises(StorageError, match="locked") as caught:
            maria.record_job_start("sim", "catalog", NOW)
        assert "\n" not in str(caught.value)
        conn.rollback()
    holder.dispose()
    maria.record_job_start("sim", "catalog", NOW)  # free again


def test_a_server_older_than_the_minimum_is_refused_in_one_line() -> None:
    with (
        mariadb_database() as url,
        patch.object(mariadb, "OLDEST_MARIADB", (99, 1)),
        pytest.raises(StorageError, match=r"MariaDB \d+\.\d+ is too old") as caught,
    ):
        open_storage(url)
    assert "99.1 or later" in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("version", "problem"),
    [
        ("10.11.6-MariaDB-0+deb12u1", None),
        ("10.6.0-MariaDB", None),
        ("11.4.2-MariaDB-log", None),
        ("10.5.23-MariaDB-1:10.5.23+maria~ubu2004", "MariaDB 10.5 is too old"),
        ("10.4.32-MariaDB", "MariaDB 10.4 is too old"),
        ("5.7.44-log", "MySQL 5.7 is too old"),
        ("8.0.36", None),
        ("banana", "not one syncd knows"),
    ],
)
def test_server_versions(version: str, problem: str | None) -> None:
    found = mariadb.server_problem(version)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_a_query_parameter_the_driver_does_not_take_is_one_line() -> None:
    with mariadb_database() as url, pytest.raises(StorageError) as caught:
        open_storage(url + "?no_such_option=1")
    assert str(caught.value).startswith("cannot open database mysql+")
    assert "no_such_option" in str(caught.value) and "\n" not in str(caught.value)
