"""Every order type end to end: a consumer's row with ``params``, ``syncd sync orders``,
real HTTP to the simulator, which keeps the form fields of each order it took.

For each type: one valid order, sent with exactly the fields the provider's API documents
for it (written out here from that documentation, not taken from the simulator's rules,
so that both are checked). For each way a row can be wrong: rejected with an ``error``
naming why, and nothing sent (the simulator saw no `add` at all, refused or not).
The simulator's own rules and lifecycles (drip-feed runs, subscriptions picking up posts
and ending) are tested first, over HTTP without syncd.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncd.cli import main
from syncd.simulator import SimPackage, SimulatedProvider, SimulatorServer
from tests.conftest import TOKEN, Rows, write_config

TODAY = date(2030, 6, 1)  # the simulator's date, so expiry dates in the tests stay valid


def service(sim: SimulatedProvider, ptype: str, *, dripfeed: bool = False) -> int:
    """The id of the simulator's first service of ``ptype``."""
    return next(
        p.service for p in sim.packages.values() if p.type == ptype and p.dripfeed == dripfeed
    )


# -- the simulator's rules and lifecycles, over HTTP ------------------------------------


@pytest.fixture
def clock() -> list[float]:
    return [1000.0]


@pytest.fixture
def panel(clock: list[float]) -> Iterator[SimulatorServer]:
    """A key-dialect simulator whose clock the test moves: a minute of an order's fields
    is one second of it, a subscribed account posts every 10 seconds."""
    sim = SimulatedProvider(
        dialect="key", token=TOKEN, clock=lambda: clock[0], order_duration=10.0, minute=1.0,
        post_interval=10.0, today=lambda: TODAY,
    )  # fmt: skip
    with SimulatorServer(sim) as server:
        yield server


def call(server: SimulatorServer, **form: str) -> Any:
    return httpx.post(server.url, data={"key": TOKEN, **form}, timeout=5).json()


def test_the_catalog_has_every_type_with_its_flags(panel: SimulatorServer) -> None:
    catalog = call(panel, action="services")
    types = {(p["type"], p["dripfeed"]) for p in catalog}
    assert types >= {(t, False) for t in TYPES} | {("Default", True)}
    assert all(
        {"refill", "cancel", "dripfeed"} <= set(p) and isinstance(p["dripfeed"], bool)
        for p in catalog
    )
    drip = [p for p in catalog if p["dripfeed"]]
    assert [p["type"] for p in drip] == ["Default"] and drip[0]["cancel"] is True


def test_a_drip_feed_order_advances_run_by_run(panel: SimulatorServer, clock: list[float]) -> None:
    sim = panel.provider
    drip = service(sim, "Default", dripfeed=True)
    order = call(panel, action="add", service=str(drip), link="https://x", quantity="100",
                 runs="3", interval="5")["order"]  # fmt: skip
    seen = []
    for moved in (0, 6, 11, 16, 30):
        clock[0] = 1000.0 + moved
        answer = call(panel, action="status", order=str(order))
        seen.append((answer["status"], answer["runs"], len(answer["orders"]), answer["remains"]))
    assert seen == [
        ("Pending", "0", 1, "300"),  # the first run is placed at once
        ("In progress", "0", 2, "240"),  # the second after 5 minutes
        ("In progress", "1", 3, "140"),  # the first done after its 10 seconds
        ("In progress", "2", 3, "40"),
        ("Completed", "3", 3, "0"),
    ]
    assert all(call(panel, action="status", order=str(child))["status"] == "Completed"
               for child in answer["orders"])  # fmt: skip
    assert answer["charge"] == "0.04500"  # 300 at 0.15 per 1000, charged when placed


def test_run_now_places_the_next_run_at_once(panel: SimulatorServer) -> None:
    sim = panel.provider
    drip = service(sim, "Default", dripfeed=True)
    order = call(panel, action="add", service=str(drip), link="https://x", quantity="10",
                 runs="2", interval="60")["order"]  # fmt: skip
    sim.run_now(order)
    assert len(call(panel, action="status", order=str(order))["orders"]) == 2


def test_a_subscription_picks_up_posts_until_its_count_then_completes(
    panel: SimulatorServer, clock: list[float]
) -> None:
    sim = panel.provider
    before = sim.balance
    order = call(panel, action="add", service=str(service(sim, "Subscriptions")),
                 username="shop", min="50", max="60", posts="2", old_posts="1", delay="3",
                 expiry="31/12/2030")["order"]  # fmt: skip
    first = call(panel, action="status", order=str(order))
    assert (first["status"], first["posts"], first["expiry"], len(first["orders"])) == (
        "Active", "0", "31/12/2030", 1,  # the old post's order, at once
    )  # fmt: skip
    clock[0] += 10  # a post; its order comes 3 minutes (seconds here) later
    assert len(call(panel, action="status", order=str(order))["orders"]) == 1
    clock[0] += 3
    middle = call(panel, action="status", order=str(order))
    assert (middle["status"], middle["posts"], len(middle["orders"])) == ("Active", "1", 2)
    clock[0] += 10
    last = call(panel, action="status", order=str(order))
    assert (last["status"], last["posts"]) == ("Completed", "2")
    clock[0] += 100  # no more posts are picked up
    assert call(panel, action="status", order=str(order))["posts"] == "2"
    # Charged as each post's order is placed, each of 50..60 units at 0.20 per 1000.
    charged = before - sim.balance
    assert charged == sim.orders[order].charge and 3 * 50 <= charged * 5000 <= 3 * 60


def test_a_subscription_pauses_expires_and_cancels(
    panel: SimulatorServer, clock: list[float]
) -> None:
    sim = panel.provider
    sub = str(service(sim, "Subscriptions"))
    paused, expiring, canceled = (
        call(panel, action="add", service=sub, username="u", min="50", max="50")["order"]
        for _ in range(3)
    )
    sim.pause(paused)
    clock[0] += 25
    assert call(panel, action="status", order=str(paused))["status"] == "Paused"
    assert call(panel, action="status", order=str(paused))["posts"] == "0"
    sim.pause(paused, paused=False)
    sim.publish(paused, 2)
    assert call(panel, action="status", order=str(paused))["posts"] == "2"

    sim.expire(expiring)
    assert call(panel, action="status", order=str(expiring))["status"] == "Expired"
    assert call(panel, action="cancel", orders=str(expiring)) == [
        {"order": str(expiring), "cancel": {"error": "Order cannot be canceled."}}
    ]
    assert call(panel, action="cancel", orders=str(canceled)) == [
        {"order": str(canceled), "cancel": "1"}
    ]
    clock[0] += 100
    answer = call(panel, action="status", order=str(canceled))
    assert (answer["status"], answer["posts"]) == ("Canceled", "2")  # picked before it


def test_a_subscription_expires_on_its_date() -> None:
    today = [TODAY]
    sim = SimulatedProvider(dialect="key", token=TOKEN, today=lambda: today[0])
    order = sim.answer("add", {"action": "add", "key": TOKEN, "username": "u", "min": "50",
                               "max": "50", "expiry": "02/06/2030",
                               "service": str(service(sim, "Subscriptions"))})  # fmt: skip
    assert isinstance(order, dict)
    status = {"order": str(order["order"])}
    today[0] = date(2030, 6, 2)
    assert sim.answer("status", status)["status"] == "Active"  # type: ignore[index]
    today[0] = date(2030, 6, 3)
    assert sim.answer("status", status)["status"] == "Expired"  # type: ignore[index]


@pytest.mark.parametrize(
    ("ptype", "form", "error"),
    [
        ("Poll", {"link": "x", "quantity": "100"}, "Incorrect answer_number"),
        ("Poll", {"link": "x", "quantity": "100", "answer_number": "1", "runs": "2"},
         "Unexpected field: runs"),
        ("Mentions", {"link": "x", "quantity": "6", "usernames": "a\nb\nc\nd\ne"},
         "The count of usernames must equal quantity"),
        ("Package", {"link": "x", "quantity": "1"}, "Unexpected field: quantity"),
        ("Subscriptions", {"username": "u", "min": "60", "max": "50"},
         "Min must not be greater than max"),
        ("Subscriptions", {"username": "u", "min": "50", "max": "60", "expiry": "2030-12-31"},
         "Incorrect expiry date"),
        ("Subscriptions", {"username": "u", "min": "50", "max": "60", "expiry": "31/05/2030"},
         "Expiry date is in the past"),
        ("Subscriptions", {"username": "u", "min": "50", "max": "60", "link": "x"},
         "Unexpected field: link"),
    ],
)  # fmt: skip
def test_the_simulator_refuses_what_a_panel_refuses(
    panel: SimulatorServer, ptype: str, form: dict[str, str], error: str
) -> None:
    sim = panel.provider
    answer = call(panel, action="add", service=str(service(sim, ptype)), **form)
    assert answer == {"error": error}
    assert not sim.orders and sim.refused_adds == 1
    ((fields, said),) = sim.refused
    assert fields == {"action": "add", "service": str(service(sim, ptype)), **form}
    assert said == error


def test_drip_feed_totals_and_the_api_token_dialect(panel: SimulatorServer) -> None:
    sim = panel.provider
    drip = str(service(sim, "Default", dripfeed=True))
    assert call(panel, action="add", service=drip, link="x", quantity="100", runs="501",
                interval="5") == {"error": "Quantity more than maximum 50000"}  # fmt: skip
    plain = str(service(sim, "Default"))
    assert call(panel, action="add", service=plain, link="x", quantity="100", runs="2",
                interval="5") == {"error": "Unexpected field: interval"}  # fmt: skip
    reference = SimulatedProvider(token=TOKEN)
    poll = {"api_token": TOKEN, "package": str(service(reference, "Poll")), "link": "x",
            "quantity": "100", "answer_number": "1"}  # fmt: skip
    assert reference.answer("add", poll) == {
        "error": "This service cannot be ordered through the API"
    }
    comments = {"api_token": TOKEN, "package": str(service(reference, "Custom Comments Package")),
                "link": "x", "custom_data": "a\nb"}  # fmt: skip
    assert "order" in reference.answer("add", comments)  # type: ignore[operator]


# -- syncd against it: what is sent for each type -----------------------------------------


@dataclass(frozen=True)
class Row:
    """A consumer's order row of one type, and the fields its `add` must carry besides
    ``action`` and the service (in the key dialect's spelling unless said)."""

    ptype: str
    link: str | None = "https://instagram.com/p/demo"
    quantity: int | None = None
    custom_data: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    sent: dict[str, str] = field(default_factory=dict)
    dripfeed: bool = False


LINK = "https://instagram.com/p/demo"
USERS = "anna\nbob\ncarla\ndan\neve"
TYPES = [
    "Default", "Package", "Custom Comments", "Custom Comments Package", "Mentions",
    "Mentions with Hashtags", "Mentions Custom List", "Mentions Hashtag",
    "Mentions User Followers", "Mentions Media Likers", "Comment Likes", "Comment Replies",
    "Poll", "Invites from Groups", "SEO", "Subscriptions",
]  # fmt: skip
VALID = {
    "Default": Row("Default", quantity=500, sent={"link": LINK, "quantity": "500"}),
    "Default drip-feed": Row(
        "Default", quantity=100, params={"runs": 5, "interval": 30}, dripfeed=True,
        sent={"link": LINK, "quantity": "100", "runs": "5", "interval": "30"},
    ),
    "Package": Row("Package", sent={"link": LINK}),
    "Custom Comments": Row(
        "Custom Comments", quantity=5, custom_data="Nice!\nWow\nGreat\nLove it\nCool",
        sent={"link": LINK, "quantity": "5", "comments": "Nice!\nWow\nGreat\nLove it\nCool"},
    ),
    "Custom Comments Package": Row(
        "Custom Comments Package", custom_data="First\nSecond",
        sent={"link": LINK, "comments": "First\nSecond"},
    ),
    "Mentions": Row("Mentions", quantity=5, params={"usernames": USERS},
                    sent={"link": LINK, "quantity": "5", "usernames": USERS}),
    "Mentions with Hashtags": Row(
        "Mentions with Hashtags", quantity=5,
        params={"usernames": USERS, "hashtags": "#sale\n#new"},
        sent={"link": LINK, "quantity": "5", "usernames": USERS, "hashtags": "#sale\n#new"},
    ),
    "Mentions Custom List": Row("Mentions Custom List", params={"usernames": USERS},
                                sent={"link": LINK, "usernames": USERS}),
    "Mentions Hashtag": Row("Mentions Hashtag", quantity=1000, params={"hashtag": "travel"},
                            sent={"link": LINK, "quantity": "1000", "hashtag": "travel"}),
    "Mentions User Followers": Row(
        "Mentions User Followers", quantity=1000, params={"username": "natgeo"},
        sent={"link": LINK, "quantity": "1000", "username": "natgeo"},
    ),
    "Mentions Media Likers": Row(
        "Mentions Media Likers", quantity=1000, params={"media": "https://instagram.com/p/m1"},
        sent={"link": LINK, "quantity": "1000", "media": "https://instagram.com/p/m1"},
    ),
    "Comment Likes": Row("Comment Likes", quantity=100, params={"username": "anna"},
                         sent={"link": LINK, "quantity": "100", "username": "anna"}),
    "Comment Replies": Row(
        "Comment Replies", custom_data="Thanks!\nAgreed", params={"username": "anna"},
        sent={"link": LINK, "username": "anna", "comments": "Thanks!\nAgreed"},
    ),
    "Poll": Row("Poll", quantity=200, params={"answer_number": 2},
                sent={"link": LINK, "quantity": "200", "answer_number": "2"}),
    "Invites from Groups": Row(
        "Invites from Groups", quantity=500, params={"groups": "@group_one\n@group_two"},
        sent={"link": LINK, "quantity": "500", "groups": "@group_one\n@group_two"},
    ),
    "SEO": Row("SEO", quantity=1000, params={"keywords": "buy shoes\nrunning shoes"},
               sent={"link": LINK, "quantity": "1000", "keywords": "buy shoes\nrunning shoes"}),
    "Subscriptions": Row(
        "Subscriptions", link=None,
        params={"username": "shop", "min": 100, "max": 200, "posts": 10, "old_posts": 2,
                "delay": 30, "expiry": "31/12/2030"},
        sent={"username": "shop", "min": "100", "max": "200", "posts": "10", "old_posts": "2",
              "delay": "30", "expiry": "31/12/2030"},
    ),
}  # fmt: skip
# Types whose every field the reference api_token dialect documents (its one extra field
# is custom_data, the comments): these are sent there too.
REFERENCE = ("Default", "Package", "Custom Comments", "Custom Comments Package")


class Syncd:
    """A simulator on loopback in one dialect, a database, and ``syncd`` pointed at both."""

    def __init__(self, tmp_path: Path, db_url: str, sql: Rows, dialect: str) -> None:
        self.sim = SimulatedProvider(dialect=dialect, token=TOKEN, today=lambda: TODAY)
        self.server = SimulatorServer(self.sim).start()
        self.sql = sql
        self.config = write_config(
            tmp_path / "syncd.toml", db_url, self.server.url, extra=f'dialect = "{dialect}"'
        )
        assert self.run("sync", "catalog") == 0

    def run(self, *args: str) -> int:
        return main(["--config", str(self.config), *args])

    def insert(self, row: Row, *, service: int | None = None, params: Any = None) -> int:
        """The row as a consumer writes it; ``params`` given instead of the row's as JSON
        text (or any text) when not None."""
        text = params if params is not None else json.dumps(row.params) if row.params else None
        self.sql(
            "INSERT INTO orders (provider, service_id, link, quantity, custom_data, params)"
            " VALUES ('sim', ?, ?, ?, ?, ?)",
            service if service is not None else self.service(row),
            row.link, row.quantity, row.custom_data, text,
        )  # fmt: skip
        ((last,),) = self.sql("SELECT max(id) FROM orders")
        assert isinstance(last, int)
        return last

    def service(self, row: Row) -> int:
        return service(self.sim, row.ptype, dripfeed=row.dripfeed)

    def outcome(self, order_id: int) -> tuple[str, int | None, str | None]:
        ((state, provider_order_id, error),) = self.sql(
            "SELECT state, provider_order_id, error FROM orders WHERE id = ?", order_id
        )
        return str(state), provider_order_id, error  # type: ignore[return-value]

    def close(self) -> None:
        self.server.stop()


@pytest.fixture
def syncd(tmp_path: Path, db_url: str, sql: Rows) -> Iterator[Syncd]:
    made = Syncd(tmp_path, db_url, sql, "key")
    yield made
    made.close()


@pytest.fixture
def reference(tmp_path: Path, db_url: str, sql: Rows) -> Iterator[Syncd]:
    made = Syncd(tmp_path, db_url, sql, "api_token")
    yield made
    made.close()


def test_the_table_is_covered() -> None:
    """Every type of the table has a valid row here and a service in the simulator."""
    sim = SimulatedProvider(token=TOKEN)
    assert {row.ptype for row in VALID.values()} == set(TYPES)
    assert all(service(sim, row.ptype, dripfeed=row.dripfeed) for row in VALID.values())


@pytest.mark.parametrize("name", list(VALID))
def test_each_type_is_sent_with_exactly_the_fields_the_provider_expects(
    syncd: Syncd, name: str
) -> None:
    row = VALID[name]
    order_id = syncd.insert(row)
    assert syncd.run("sync", "orders") == 0
    state, provider_order_id, error = syncd.outcome(order_id)
    assert (state, error) == ("active", None) and provider_order_id is not None
    assert syncd.sim.sent_fields(provider_order_id) == {
        "action": "add", "service": str(syncd.service(row)), **row.sent
    }  # fmt: skip
    assert syncd.sim.refused_adds == 0


@pytest.mark.parametrize("name", REFERENCE)
def test_the_reference_dialect_sends_the_types_it_documents(reference: Syncd, name: str) -> None:
    row = VALID[name]
    order_id = reference.insert(row)
    assert reference.run("sync", "orders") == 0
    state, provider_order_id, error = reference.outcome(order_id)
    assert (state, error) == ("active", None) and provider_order_id is not None
    sent = {("custom_data" if k == "comments" else k): v for k, v in row.sent.items()}
    assert reference.sim.sent_fields(provider_order_id) == {
        "action": "add", "package": str(reference.service(row)), **sent
    }  # fmt: skip


# -- rows syncd must reject before sending ----------------------------------------------


@dataclass(frozen=True)
class Invalid:
    row: Row
    # What the error must name, in any case: each entry a word, or words separated by "|"
    # of which one will do.
    why: tuple[str, ...]
    params: str | None = None  # the params column's text, when not the row's as JSON


def _poll(**params: Any) -> Row:
    return Row("Poll", quantity=200, params=params)


def _subscription(**params: Any) -> Row:
    return Row("Subscriptions", link=None, params={"username": "shop", **params})


INVALID = {
    "missing field": Invalid(_poll(), ("answer_number",)),
    "extra field": Invalid(_poll(answer_number=1, usernames="anna"), ("usernames",)),
    "drip-feed field on a package without drip-feed": Invalid(
        Row("Default", quantity=100, params={"runs": 5, "interval": 30}), ("runs",)
    ),
    "count mismatch": Invalid(
        Row("Mentions", quantity=6, params={"usernames": USERS}), ("usernames",)
    ),
    "comments count mismatch": Invalid(
        Row("Custom Comments", quantity=6, custom_data="a\nb"), ("comment",)
    ),
    "drip-feed total out of range": Invalid(
        Row("Default", quantity=100, params={"runs": 501, "interval": 30}, dripfeed=True),
        ("runs|total",),
    ),
    "subscription min > max": Invalid(_subscription(min=300, max=200), ("min", "max")),
    "bad expiry": Invalid(_subscription(min=100, max=200, expiry="31/02/2030"), ("expiry",)),
    "expiry not d/m/Y": Invalid(_subscription(min=100, max=200, expiry="2030-12-31"),
                                ("expiry",)),
    "params not JSON": Invalid(_poll(), ("params",), params="{answer_number: 2"),
    "params not an object": Invalid(_poll(), ("params",), params="[2]"),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(INVALID))
def test_an_invalid_row_is_rejected_naming_why_and_nothing_is_sent(syncd: Syncd, kind: str) -> None:
    case = INVALID[kind]
    order_id = syncd.insert(case.row, params=case.params)
    assert syncd.run("sync", "orders") == 0
    state, provider_order_id, error = syncd.outcome(order_id)
    assert (state, provider_order_id) == ("rejected", None)
    assert error is not None and all(
        any(word in error.lower() for word in words.split("|")) for words in case.why
    ), error
    assert "\n" not in error
    assert syncd.sim.count("add") == 0 and syncd.sim.refused_adds == 0


def test_a_type_syncd_does_not_know_is_rejected(syncd: Syncd) -> None:
    syncd.sim.add_package(SimPackage(990, "Story Lottery", "Story Lottery", "Stories",
                                     syncd.sim.packages[100].rate, 1, 100))  # fmt: skip
    assert syncd.run("sync", "catalog") == 0
    order_id = syncd.insert(Row("Story Lottery", quantity=10), service=990)
    assert syncd.run("sync", "orders") == 0
    state, _, error = syncd.outcome(order_id)
    assert state == "rejected" and error is not None and "story lottery" in error.lower()
    assert syncd.sim.count("add") == 0


@pytest.mark.parametrize("name", [n for n in VALID if VALID[n].ptype not in REFERENCE]
                         + ["Default drip-feed"])  # fmt: skip
def test_a_type_the_reference_dialect_documents_no_field_for_is_rejected(
    reference: Syncd, name: str
) -> None:
    row = VALID[name]
    order_id = reference.insert(row)
    assert reference.run("sync", "orders") == 0
    state, _, error = reference.outcome(order_id)
    assert state == "rejected" and error is not None, error
    assert "api_token" in error or "dialect" in error, error
    assert reference.sim.count("add") == 0


def test_invalid_rows_beside_valid_ones_leave_the_valid_ones_sent(syncd: Syncd) -> None:
    """One pass over a queue of every valid row and every invalid one: each valid row
    sent once, as expected, and not one invalid add reaches the provider."""
    valid = {syncd.insert(row): row for row in VALID.values()}
    for case in INVALID.values():
        syncd.insert(case.row, params=case.params)
    assert syncd.run("sync", "orders") == 0
    active = syncd.sql("SELECT id FROM orders WHERE state = 'active'")
    assert {i for (i,) in active} == set(valid)
    assert syncd.sim.count("add") == len(valid) and syncd.sim.refused_adds == 0
    for order_id, row in valid.items():
        provider_order_id = syncd.outcome(order_id)[1]
        assert provider_order_id is not None
        assert syncd.sim.sent_fields(provider_order_id) == {
            "action": "add", "service": str(syncd.service(row)), **row.sent
        }  # fmt: skip
