"""The panel bridge of docs/panels.md on MariaDB: the page's SQL, run as printed (so the
page and the test cannot drift apart), against a SmartPanel-shaped orders table, with
`syncd run` and the provider simulator."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from syncd.simulator import SimulatorServer
from syncd.storage import open_storage
from tests.conftest import mariadb_database, write_config
from tests.helpers import Daemon, wait_until

PAGE = Path(__file__).resolve().parents[2] / "docs" / "panels.md"

# The panel's own table, as SmartPanel shapes it (the columns the bridge uses, and a few
# it does not); `status` is an ENUM, so a word the panel does not know fails under the
# strict sql_mode the triggers are created in.
PANEL_TABLE = """
CREATE TABLE {table} (
  `id` INT(11) NOT NULL AUTO_INCREMENT,
  `type` VARCHAR(20) NOT NULL DEFAULT 'api',
  `user_id` INT(11) NOT NULL,
  `service_id` INT(11) NOT NULL,
  `api_provider_id` INT(11) NOT NULL DEFAULT 0,
  `api_service_id` INT(11) NOT NULL DEFAULT 0,
  `api_order_id` INT(11) NOT NULL DEFAULT 0,
  `link` TEXT NULL,
  `quantity` INT(11) NULL,
  `charge` DECIMAL(15,4) NOT NULL DEFAULT 0,
  `formal_charge` DECIMAL(15,4) NULL,
  `start_counter` INT(11) NULL,
  `remains` INT(11) NULL,
  `status` ENUM('pending','processing','inprogress','completed','partial','canceled',
                'refunded','error','fail') NOT NULL DEFAULT 'pending',
  `note` TEXT NULL,
  `created_at` DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
  PRIMARY KEY (`id`),
  KEY `user_id` (`user_id`),
  KEY `status` (`status`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci
"""


def sql_blocks(heading: str) -> list[str]:
    """The statements of the fenced ``sql`` blocks under the page's ``## heading``, in
    order. A block holding a trigger is one statement (its body has semicolons); any
    other block is split at the semicolons that end its lines."""
    text = PAGE.read_text(encoding="utf-8")
    sections = re.split(r"^## ", text, flags=re.MULTILINE)
    (section,) = [s for s in sections if s.startswith(heading + "\n")]
    statements: list[str] = []
    for block in re.findall(r"^```sql\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL):
        if re.match(r"CREATE (OR REPLACE )?(DEFINER = \S+ )?TRIGGER", block):
            statements.append(block.strip())
        else:
            statements += [s.strip() for s in re.split(r";\s*$", block, flags=re.M) if s.strip()]
    assert statements, f"no SQL under {heading!r}"
    return statements


@dataclass
class Bridge:
    """A panel and a syncd sharing one MariaDB server, the bridge's SQL to hand."""

    syncd_url: str
    syncd_db: str
    panel_db: str
    panel_table: str
    definer: str
    admin: sa.Engine
    committed_at = 0.0  # when the panel's last order committed (time.monotonic)

    def name(self, statement: str) -> str:
        """``statement`` of the page with its names made this test's."""
        return (
            statement.replace("`panel`.`orders`", f"`{self.panel_db}`.`{self.panel_table}`")
            .replace("`panel`.", f"`{self.panel_db}`.")
            .replace("`syncd`.", f"`{self.syncd_db}`.")
            .replace("'syncd_bridge'@", f"'{self.definer}'@")
        )

    def run(self, heading: str) -> list[list[tuple[Any, ...]]]:
        """Run the page's SQL under ``heading``, as an administrator would paste it: on a
        plain connection, in the server's default sql_mode (not syncd's)."""
        results = []
        conn = self.admin.raw_connection()
        try:
            cursor = conn.cursor()
            for statement in sql_blocks(heading):
                cursor.execute(self.name(statement))
                results.append(list(cursor.fetchall()) if cursor.description else [])
            conn.commit()
        finally:
            conn.close()
        return results

    def query(self, statement: str, *params: object) -> list[tuple[Any, ...]]:
        """One statement on a plain connection (``%s`` parameters), committed."""
        conn = self.admin.raw_connection()
        try:
            cursor = conn.cursor()
            cursor.execute(statement.replace("PANEL", f"`{self.panel_db}`.`{self.panel_table}`")
                           .replace("SYNCD.", f"`{self.syncd_db}`."), params or None)  # fmt: skip
            rows = list(cursor.fetchall()) if cursor.description else []
            conn.commit()
            return rows
        finally:
            conn.close()

    def place(self, **values: object) -> int:
        """A panel order, inserted as the panel inserts one: the id the panel's own
        connection gets back from LAST_INSERT_ID()."""
        row = {"user_id": 7, "service_id": 12, "api_provider_id": 1, "api_service_id": 100,
               "link": "https://instagram.com/p/panel", "quantity": 300,
               "charge": Decimal("0.5000"), **values}  # fmt: skip
        columns = ", ".join(f"`{c}`" for c in row)
        marks = ", ".join(["%s"] * len(row))
        conn = self.admin.raw_connection()
        try:
            cursor = conn.cursor()
            cursor.execute(f"INSERT INTO PANEL ({columns}) VALUES ({marks})"
                           .replace("PANEL", f"`{self.panel_db}`.`{self.panel_table}`"),
                           tuple(row.values()))  # fmt: skip
            cursor.execute("SELECT LAST_INSERT_ID()")
            ((panel_id,),) = cursor.fetchall()
            conn.commit()
            self.committed_at = time.monotonic()
        finally:
            conn.close()
        ((newest,),) = self.query("SELECT max(id) FROM PANEL")
        assert panel_id == newest  # the trigger's own INSERT does not change the panel's id
        return int(panel_id)

    def panel_row(self, panel_id: int) -> dict[str, Any]:
        columns = "api_order_id, status, charge, formal_charge, start_counter, remains"
        (row,) = self.query(f"SELECT {columns} FROM PANEL WHERE id = %s", panel_id)
        return dict(zip(columns.split(", "), row, strict=True))

    def syncd_order(self, panel_id: int) -> dict[str, Any]:
        columns = "id, state, status, provider_order_id, link, quantity, error"
        (row,) = self.query(
            f"SELECT {', '.join('s.' + c for c in columns.split(', '))} FROM SYNCD.orders AS s "
            f"JOIN `{self.panel_db}`.bridge_orders AS b ON b.syncd_order_id = s.id "
            "WHERE b.panel_order_id = %s",
            panel_id,
        )
        return dict(zip(columns.split(", "), row, strict=True))


@pytest.fixture(params=["two databases", "one database"])
def bridge(request: pytest.FixtureRequest) -> Iterator[Bridge]:
    """syncd's database, migrated, and the panel's table in a database of its own or in
    syncd's (then named ``panel_orders``), with the bridge installed: twice, as a
    re-run of the recipe must change nothing."""
    with ExitStack() as stack:
        syncd_url = stack.enter_context(mariadb_database())
        open_storage(syncd_url).close()
        syncd_db = sa.engine.make_url(syncd_url).database
        assert syncd_db is not None
        if request.param == "two databases":
            panel_db = sa.engine.make_url(stack.enter_context(mariadb_database())).database
            assert panel_db is not None
            panel_table = "orders"
        else:
            panel_db, panel_table = syncd_db, "panel_orders"
        admin = sa.create_engine(syncd_url)
        stack.callback(admin.dispose)
        bridge = Bridge(syncd_url, syncd_db, panel_db, panel_table,
                        f"bridge_{uuid.uuid4().hex[:10]}", admin)  # fmt: skip
        stack.callback(bridge.query, f"DROP USER IF EXISTS '{bridge.definer}'@'localhost'")
        bridge.query(PANEL_TABLE.format(table=f"`{panel_db}`.`{panel_table}`"))
        bridge.run("The recipe")
        bridge.run("The recipe")
        yield bridge


@pytest.fixture
def daemon(
    bridge: Bridge, tmp_path: Path, server: SimulatorServer, daemons: list[Daemon]
) -> Daemon:
    """`syncd run` on syncd's database, ready, with its catalog."""
    config = write_config(tmp_path / "syncd.toml", bridge.syncd_url, server.url,
                          extra='orders_interval = "1s"')  # fmt: skip
    started = Daemon(config, tmp_path)
    daemons.append(started)
    started.wait_for("READY=1")
    wait_until(lambda: bridge.query("SELECT count(*) FROM SYNCD.packages") != [(0,)])
    return started


def test_a_panel_order_is_sent_once_and_followed_to_partial_on_the_panels_row(
    bridge: Bridge, daemon: Daemon, server: SimulatorServer
) -> None:
    panel_id = bridge.place()
    wait_until(lambda: bridge.panel_row(panel_id)["api_order_id"] != 0, timeout=10)
    took = time.monotonic() - bridge.committed_at
    assert took < 2, f"the provider's order id reached the panel's row after {took:.2f} s"
    (sent,) = server.provider.orders.values()  # exactly one provider order
    assert (sent.service, sent.link, sent.quantity) == (100, "https://instagram.com/p/panel", 300)
    assert bridge.panel_row(panel_id)["api_order_id"] == sent.id
    assert bridge.syncd_order(panel_id)["provider_order_id"] == sent.id

    server.provider.pin_order(sent.id, status="In progress", charge="0.27",
                              start_counter="1200", remains="250")  # fmt: skip
    wait_until(lambda: bridge.panel_row(panel_id)["status"] == "inprogress")
    assert bridge.panel_row(panel_id)["start_counter"] == 1200

    # The panel holds its row while the order turns Partial: syncd's write waits for it
    # (the trigger runs in syncd's transaction), and both land once the panel lets go.
    locker = bridge.admin.raw_connection()
    try:
        cursor = locker.cursor()
        cursor.execute("START TRANSACTION")
        cursor.execute(f"SELECT * FROM `{bridge.panel_db}`.`{bridge.panel_table}` "
                       "WHERE id = %s FOR UPDATE", (panel_id,))  # fmt: skip
        server.provider.pin_order(sent.id, status="Partial", charge="0.18",
                                  start_counter="1200", remains="100")  # fmt: skip
        checks = server.provider.count("status")
        wait_until(lambda: server.provider.count("status") > checks)  # asked since the pin
        time.sleep(0.5)
        assert bridge.syncd_order(panel_id)["status"] == "In progress"  # waiting, uncommitted
    finally:
        locker.rollback()
        locker.close()
    wait_until(lambda: bridge.panel_row(panel_id)["status"] == "partial")
    assert bridge.panel_row(panel_id) == {
        "api_order_id": sent.id, "status": "partial", "charge": Decimal("0.5000"),
        "formal_charge": Decimal("0.1800"), "start_counter": 1200, "remains": 100,
    }  # fmt: skip
    assert bridge.syncd_order(panel_id)["status"] == "Partial"
    ((refunds),) = bridge.run("The refund")
    assert refunds == [(panel_id, "partial", Decimal("0.5000"), Decimal("0.1667"))]  # 0.5 * 100/300
    assert len(server.provider.orders) == 1
    assert bridge.query("SELECT count(*) FROM SYNCD.orders") == [(1,)]
    code, _, _, err = daemon.stop()
    assert code == 0 and "Traceback" not in err


def test_odd_panel_rows_break_nothing_and_an_emoji_survives(
    bridge: Bridge, daemon: Daemon, server: SimulatorServer
) -> None:
    unknown = bridge.place(api_provider_id=2)  # a provider the bridge does not map
    no_link = bridge.place(link=None)
    negative = bridge.place(quantity=-5)
    emoji_link = "https://instagram.com/p/🦄🎉-ünï"
    emoji = bridge.place(link=emoji_link)
    gone = bridge.place(link="https://instagram.com/p/deleted")
    huge = bridge.place(link="https://youtube.com/watch?v=huge")

    wait_until(lambda: bridge.panel_row(no_link)["status"] == "error")
    wait_until(lambda: bridge.panel_row(negative)["status"] == "error")
    assert bridge.syncd_order(no_link)["state"] == "rejected"
    assert bridge.syncd_order(negative)["error"].endswith("above 0, not -5")
    # Not syncd's: no syncd order, the panel's row as the panel left it.
    links = f"SELECT count(*) FROM `{bridge.panel_db}`.bridge_orders WHERE panel_order_id = %s"
    assert bridge.query(links, unknown) == [(0,)]
    assert bridge.panel_row(unknown)["status"] == "pending"
    assert bridge.panel_row(unknown)["api_order_id"] == 0

    for panel_id in (emoji, gone, huge):
        wait_until(lambda: bridge.panel_row(panel_id)["api_order_id"] != 0)  # noqa: B023
    by_link = {o.link: o for o in server.provider.orders.values()}
    assert set(by_link) == {emoji_link, "https://instagram.com/p/deleted",
                            "https://youtube.com/watch?v=huge"}  # each sent once  # fmt: skip
    assert len(server.provider.orders) == 3
    assert bridge.syncd_order(emoji)["link"] == emoji_link

    # The panel deletes a row syncd follows: syncd's writes go on, matching nothing.
    bridge.query("DELETE FROM PANEL WHERE id = %s", gone)
    server.provider.pin_order(by_link["https://instagram.com/p/deleted"].id,
                              status="Completed", charge="0.27", remains="0")  # fmt: skip
    wait_until(lambda: bridge.syncd_order(gone)["state"] == "done")

    # A start counter the panel's INT cannot hold: syncd keeps it, the panel's row keeps
    # its last values, and the bridge says why.
    big = by_link["https://youtube.com/watch?v=huge"].id
    server.provider.pin_order(big, status="In progress", charge="0.27",
                              start_counter="3000000000", remains="300")  # fmt: skip
    wait_until(lambda: bridge.syncd_order(huge)["status"] == "In progress")
    ((start, error),) = bridge.query(
        f"SELECT s.start_counter, b.error FROM SYNCD.orders AS s JOIN "
        f"`{bridge.panel_db}`.bridge_orders AS b ON b.syncd_order_id = s.id "
        "WHERE b.panel_order_id = %s", huge)  # fmt: skip
    assert start == 3_000_000_000 and "start_counter" in error
    assert bridge.panel_row(huge)["status"] != "inprogress"
    server.provider.pin_order(big, status="Completed", charge="0.27",
                              start_counter="1000", remains="0")  # fmt: skip
    wait_until(lambda: bridge.panel_row(huge)["status"] == "completed")
    assert bridge.panel_row(huge)["start_counter"] == 1000

    code, _, _, err = daemon.stop()
    assert code == 0 and "Traceback" not in err


def test_the_bridge_removed_leaves_both_sides_working(
    bridge: Bridge, daemon: Daemon, server: SimulatorServer
) -> None:
    before = bridge.place()
    wait_until(lambda: bridge.panel_row(before)["api_order_id"] != 0)
    bridge.run("Removing the bridge")
    assert bridge.query(f"SHOW TRIGGERS FROM `{bridge.panel_db}`") == []
    assert bridge.query(f"SHOW TRIGGERS FROM `{bridge.syncd_db}`") == []
    after = bridge.place()  # the panel goes on inserting; nothing is queued for it
    (sent,) = server.provider.orders.values()
    server.provider.pin_order(sent.id, status="Completed", charge="0.27", remains="0")
    wait_until(lambda: bridge.query("SELECT state FROM SYNCD.orders") == [("done",)])
    assert bridge.panel_row(after)["status"] == "pending"
    assert bridge.panel_row(before)["status"] != "completed"  # no longer reported
    assert len(server.provider.orders) == 1
    code, _, _, err = daemon.stop()
    assert code == 0 and "Traceback" not in err


def test_the_refund_is_the_providers_share_for_drip_feed_package_and_odd_orders(
    bridge: Bridge,
) -> None:
    """The refund SQL against ledger rows as syncd writes them (docs/ledger.md): each
    order's charge row is minus its expected cost, its refunds and surcharges what the
    provider changed of it."""
    bridge.query("INSERT INTO SYNCD.providers (name, url) VALUES ('sim', 'http://sim')")
    # (panel charge, quantity, remains, status, ledger rows (kind, amount))
    cases = [
        # Drip-feed: 5 runs of 100 at 0.90 per 1000 cost 0.45; Partial with 200 of the 500
        # left, charged 0.27: 0.18 back, 40 %, where remains / quantity says 200 %.
        ("1.0000", 100, 200, "partial", [("charge", "-0.45"), ("refund", "0.18")]),
        # A Package (no quantity) at 2.00, Partial at 1.50.
        ("3.0000", None, None, "partial", [("charge", "-2.00"), ("refund", "0.50")]),
        # Charged 0.30 more after a refund of 1.00: 0.70 back of 2.00.
        ("1.0000", None, None, "partial",
         [("charge", "-2.00"), ("refund", "1.00"), ("surcharge", "-0.30")]),
        # Nothing charged at all (a subscription that picked no post), canceled.
        ("0.5000", None, None, "canceled", [("charge", "0")]),
        # Canceled after: the whole charge back.
        ("0.5000", 300, 300, "canceled", [("charge", "-0.27"), ("refund", "0.27")]),
        # Two thirds back, rounded half up to the panel's places: 0.0001 * 2/3 -> 0.0001.
        ("0.0001", 300, 200, "partial", [("charge", "-0.27"), ("refund", "0.18")]),
        # Never counted by the ledger: settled by hand.
        ("0.5000", 300, 100, "partial", []),
        # First seen already Partial: its refund is a refund row all the same.
        ("0.5000", 300, 100, "partial", [("charge", "-0.27"), ("refund", "0.09")]),
        # Partial by its status, but the provider gave nothing back: nothing to refund.
        ("0.5000", 300, 100, "partial", [("charge", "-0.27")]),
    ]  # fmt: skip
    expected = ["0.4000", "0.7500", "0.3500", "0.5000", "0.5000", "0.0001", None, "0.1667",
                "0.0000"]  # fmt: skip
    balance = Decimal(100)
    ids = []
    for charge, quantity, remains, status, rows in cases:
        panel_id = bridge.place(charge=Decimal(charge), quantity=quantity, remains=remains,
                                status=status, api_provider_id=99)  # fmt: skip
        bridge.query("INSERT INTO SYNCD.orders (provider, service_id, link, quantity)"
                     " VALUES ('sim', 100, 'https://x', %s)", quantity)  # fmt: skip
        ((order_id,),) = bridge.query("SELECT max(id) FROM SYNCD.orders")
        bridge.query(f"INSERT INTO `{bridge.panel_db}`.bridge_orders (panel_order_id,"
                     " syncd_order_id) VALUES (%s, %s)", panel_id, order_id)  # fmt: skip
        for kind, amount in rows:
            balance += Decimal(amount)
            bridge.query("INSERT INTO SYNCD.ledger (provider, at, kind, order_id, amount,"
                         " currency, balance_after) VALUES ('sim', UTC_TIMESTAMP(6), %s, %s,"
                         " %s, 'USD', %s)", kind, order_id, amount, balance)  # fmt: skip
        ids.append(panel_id)
    ((refunds),) = bridge.run("The refund")
    assert [r[0] for r in refunds] == ids
    assert [None if r[3] is None else f"{r[3]:.4f}" for r in refunds] == expected
