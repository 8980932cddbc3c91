"""What each order type needs, as plain function calls: a valid row of every type gives
exactly the fields the provider expects, an invalid one a one-line reason naming the field,
and no params a consumer could write makes ``placement`` raise."""

from __future__ import annotations

import json
import string
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.lifecycle import available_funds, check_order
from syncd.models import Order, OrderState, Package, StoredPackage
from syncd.order_types import (
    COUNT_LARGEST,
    REFERENCE,
    TYPES,
    Placement,
    Refusal,
    needs,
    placement,
    type_key,
)
from syncd.plans import Funds, Verdict
from syncd.provider.dialects import DIALECTS

KEY = DIALECTS["key"]
API_TOKEN = DIALECTS["api_token"]
LINK = "https://instagram.com/p/abc"


def package(kind: str = "Default", low: int = 1, high: int = 1000, **extra: Any) -> Package:
    return Package(7, "Service", kind, "Instagram", Decimal("2.00"), low, high, extra)


def place(
    kind: str,
    *,
    link: str | None = LINK,
    quantity: object = 20,
    custom_data: str | None = None,
    params: object = None,
    dialect: Any = KEY,
    **extra: Any,
) -> Placement | Refusal:
    return placement(
        package(kind, **extra), link=link, quantity=quantity, custom_data=custom_data,
        params=params, dialect=dialect,
    )  # fmt: skip


def fields(result: Placement | Refusal) -> dict[str, str]:
    assert isinstance(result, Placement), result
    return result.fields


def reason(result: Placement | Refusal) -> str:
    assert isinstance(result, Refusal), result
    assert "\n" not in result.reason and "\r" not in result.reason
    return result.reason


THREE = "ann\nbob\ncid"
# A valid row of every type, and exactly the fields its `add` carries (key dialect).
VALID: dict[str, tuple[dict[str, Any], dict[str, str]]] = {
    "Default": ({}, {"link": LINK, "quantity": "20"}),
    "Package": ({"quantity": None}, {"link": LINK}),
    "Custom Comments": (
        {"quantity": 3, "custom_data": "Nice!\r\n\nGreat\nWow\n"},
        {"link": LINK, "quantity": "3", "comments": "Nice!\nGreat\nWow"},
    ),
    "Custom Comments Package": (
        {"quantity": None, "custom_data": "Nice!\nGreat"},
        {"link": LINK, "comments": "Nice!\nGreat"},
    ),
    "Mentions": (
        {"quantity": 3, "params": {"usernames": THREE}},
        {"link": LINK, "quantity": "3", "usernames": THREE},
    ),
    "Mentions with Hashtags": (
        {"quantity": 3, "params": {"usernames": ["ann", "bob", "cid"], "hashtags": "#a\n#b"}},
        {"link": LINK, "quantity": "3", "usernames": THREE, "hashtags": "#a\n#b"},
    ),
    "Mentions Custom List": (
        {"quantity": None, "params": '{"usernames": "ann\\r\\nbob\\n"}'},
        {"link": LINK, "usernames": "ann\nbob"},
    ),
    "Mentions Hashtag": (
        {"params": {"hashtag": " #sun "}},
        {"link": LINK, "quantity": "20", "hashtag": "#sun"},
    ),
    "Mentions User Followers": (
        {"params": {"username": "ann"}},
        {"link": LINK, "quantity": "20", "username": "ann"},
    ),
    "Mentions Media Likers": (
        {"params": {"media": "https://instagram.com/p/xyz"}},
        {"link": LINK, "quantity": "20", "media": "https://instagram.com/p/xyz"},
    ),
    "Comment Likes": (
        {"params": {"username": "ann"}},
        {"link": LINK, "quantity": "20", "username": "ann"},
    ),
    "Comment Replies": (
        {"quantity": None, "custom_data": "Thanks\nAgreed", "params": {"username": "ann"}},
        {"link": LINK, "username": "ann", "comments": "Thanks\nAgreed"},
    ),
    "Poll": (
        {"params": b'{"answer_number": "2"}'},
        {"link": LINK, "quantity": "20", "answer_number": "2"},
    ),
    "Invites from Groups": (
        {"params": {"groups": "g1\ng2"}},
        {"link": LINK, "quantity": "20", "groups": "g1\ng2"},
    ),
    "SEO": (
        {"params": {"keywords": "shoes\nred shoes"}},
        {"link": LINK, "quantity": "20", "keywords": "shoes\nred shoes"},
    ),
    "Subscriptions": (
        {"link": None, "quantity": None,
         "params": {"username": "ann", "min": 20, "max": "30", "posts": 5, "old_posts": 0,
                    "delay": 0, "expiry": "1/2/2027"}},
        {"username": "ann", "min": "20", "max": "30", "posts": "5", "old_posts": "0",
         "delay": "0", "expiry": "01/02/2027"},
    ),
}  # fmt: skip


def test_the_table_holds_every_type_and_each_has_a_valid_row_here() -> None:
    assert {type_key(t) for t in VALID} == set(TYPES)


@pytest.mark.parametrize("kind", VALID)
def test_a_valid_row_of_each_type_gives_exactly_the_fields_the_provider_expects(
    kind: str,
) -> None:
    row, expected = VALID[kind]
    assert fields(place(kind, **row)) == expected


def test_a_drip_feed_sends_runs_and_interval_and_counts_every_run() -> None:
    result = place("Default", quantity=100, params={"runs": 5, "interval": "30"}, dripfeed=True)
    assert fields(result) == {"link": LINK, "quantity": "100", "runs": "5", "interval": "30"}
    assert isinstance(result, Placement) and result.units == 500
    assert result.cost(Decimal("2.00")) == Decimal("1.00")  # 2.00 per 1000, 500 units


@pytest.mark.parametrize("flag", [True, 1, "1", "true", " Yes "])
def test_the_dripfeed_flag_is_read_in_the_forms_catalogs_send_it(flag: object) -> None:
    assert isinstance(place("Default", params={"runs": 2, "interval": 1}, dripfeed=flag), Placement)


@pytest.mark.parametrize("kind", ["custom  COMMENTS", "CustomComments", " custom comments "])
def test_a_type_is_read_whatever_its_case_and_spacing(kind: str) -> None:
    assert fields(place(kind, quantity=1, custom_data="ok")) == {
        "link": LINK, "quantity": "1", "comments": "ok",
    }  # fmt: skip


def test_the_reference_dialect_spells_comments_its_own_way_and_takes_nothing_more() -> None:
    assert fields(place("Custom Comments", quantity=1, custom_data="hi", dialect=API_TOKEN)) == {
        "link": LINK, "quantity": "1", "custom_data": "hi",
    }  # fmt: skip
    assert (REFERENCE.name, REFERENCE.comments_field, REFERENCE.order_fields) == (
        API_TOKEN.name, API_TOKEN.comments_field, API_TOKEN.order_fields,
    )  # fmt: skip


@pytest.mark.parametrize(
    "kind", [k for k, (row, _) in VALID.items() if row.get("params") is not None]
)
def test_a_type_needing_a_field_the_reference_dialect_lacks_is_rejected_for_it(
    kind: str,
) -> None:
    row, _ = VALID[kind]
    why = reason(place(kind, **row, dialect=API_TOKEN))
    needed = TYPES[type_key(kind)].needs
    assert "api_token dialect has no field for" in why
    assert any(name in why for name in needed)


def test_a_drip_feed_cannot_go_through_the_reference_dialect() -> None:
    why = reason(place("Default", params={"runs": 2, "interval": 5}, dialect=API_TOKEN, dripfeed=1))
    assert why == "params.runs: the api_token dialect has no field for runs"


def sub(**params: object) -> dict[str, object]:
    """A subscription row: no link, no quantity, these params."""
    return {"link": None, "quantity": None, "params": {"username": "a"} | params}


def mentions(quantity: int, usernames: object) -> dict[str, object]:
    return {"quantity": quantity, "params": {"usernames": usernames}}


def poll(answer: object) -> dict[str, object]:
    return {"params": {"answer_number": answer}}


def tag(value: object) -> dict[str, object]:
    return {"params": {"hashtag": value}}


P7 = "package 7"
INVALID = [
    ("Nonsense", {}, f"{P7} has type 'Nonsense', which syncd does not know how to order"),
    ("Default", {"params": {"runs": 2, "interval": 5}},
     f"params.runs: {P7} (Default) offers no drip-feed (no dripfeed flag)"),
    ("Default", {"params": {"username": "x"}},
     f"params.username: {P7} (Default) takes no username"),
    ("Default", {"params": {"link": "x"}}, "params.link: the link column holds it, not params"),
    ("Default", {"params": {"comments": "x"}},
     "params.comments: comments go in custom_data, not params"),
    ("Default", {"link": None}, "link is required"),
    ("Default", {"link": "a\nb"}, "link must be one non-empty line"),
    ("Default", {"quantity": None}, "quantity is required"),
    ("Default", {"quantity": 5000}, "quantity 5000 is outside 1..1000"),
    ("Default", {"quantity": -5}, "quantity must be a whole number above 0, not -5"),
    ("Default", {"quantity": True}, "quantity must be a whole number above 0, not true"),
    ("Default", {"custom_data": "hi"},
     f"custom_data: {P7} (Default) does not take custom comments"),
    ("Package", {}, f"quantity: {P7} (Package) takes no quantity"),
    ("Subscriptions", sub(min=20, max=30) | {"link": "x"},
     f"link: {P7} (Subscriptions) takes no link"),
    ("Custom Comments", {"quantity": 3, "custom_data": "a\nb"},
     f"custom_data: {P7} (Custom Comments) takes one comment per unit: 2 comment lines for "
     "quantity 3"),
    ("Custom Comments Package", {"quantity": None},
     f"custom_data: {P7} (Custom Comments Package) needs comments"),
    ("Comment Replies", {"quantity": None, "params": {"username": "a"}}, "custom_data:"),
    ("Comment Replies", {"quantity": None, "custom_data": "x"},
     f"params.username: {P7} (Comment Replies) needs username"),
    ("Mentions", mentions(3, "a\nb"),
     f"params.usernames: {P7} (Mentions) takes one per unit: 2 lines for quantity 3"),
    ("Mentions", mentions(3, "a\n\nb\nc"), "params.usernames: line 2 is empty"),
    ("Mentions", mentions(2, ["a", ""]), "params.usernames: line 2 is empty"),
    ("Mentions", mentions(2, ["a", 5]), "params.usernames: a list of texts"),
    ("Mentions", mentions(2, "  "), "params.usernames: must not be empty"),
    ("Mentions Hashtag", tag("a\nb"), "params.hashtag: must be one non-empty line"),
    ("Mentions Hashtag", tag(5), "params.hashtag: must be text, not the number 5"),
    ("Mentions Hashtag", tag("\ud800"), "params.hashtag: holds a character"),
    ("Mentions Hashtag", tag({"a": 1}), "params.hashtag: must be text, not an object"),
    ("Poll", poll(True), "params.answer_number: must be a whole number"),
    ("Poll", poll(1.5), "params.answer_number: must be a whole number"),
    ("Poll", {"params": '{"answer_number": 1.5}'}, "not 1.5"),
    ("Poll", poll(-1), "not -1"),
    ("Poll", poll("1e3"), "not '1e3'"),
    ("Poll", poll(10**30), f"from 1 to {COUNT_LARGEST}"),
    ("Poll", {"params": '{"answer_number": NaN}'}, "params: not JSON (NaN is no number)"),
    ("Poll", {"params": '{"answer_number": 1, "answer_number": 2}'},
     "'answer_number' is given twice"),
    ("Poll", {"params": "[1, 2]"}, "params must be a JSON object, not a list"),
    ("Poll", {"params": "{"}, "params: not JSON"),
    ("Poll", {"params": b"\xff"}, "params: not UTF-8 text"),
    ("Poll", {"params": 12}, "params must be a JSON object, not the number 12"),
    ("Poll", {"params": "[" * 100_000}, "params: "),
    ("Poll", {}, f"params.answer_number: {P7} (Poll) needs answer_number"),
    ("Subscriptions", sub(min=40, max=30), "params.min: min 40 is above max 30"),
    ("Subscriptions", sub(min=5, max=3000), "params.min, params.max: 5..3000 is outside 1..1000"),
    ("Subscriptions", sub(min=20, max=30, expiry="31/02/2027"),
     "params.expiry: not a date as d/m/Y: '31/02/2027'"),
    ("Subscriptions", sub(min=20, max=30, expiry="2027-02-01"), "params.expiry: not a date"),
    ("Subscriptions", sub(min=20, max=30, delay=-5), "params.delay: must be a whole number from 0"),
    ("Subscriptions", sub(max=30), f"params.min: {P7} (Subscriptions) needs min"),
]  # fmt: skip


@pytest.mark.parametrize(("kind", "row", "expected"), INVALID)
def test_an_invalid_row_is_refused_with_a_reason_naming_the_field(
    kind: str, row: dict[str, Any], expected: str
) -> None:
    assert expected in reason(place(kind, **row))


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"runs": 2}, "params.interval: a drip-feed needs both runs and interval"),
        ({"interval": 2}, "params.runs: a drip-feed needs both runs and interval"),
        ({"runs": 1, "interval": 2}, "params.runs: must be a whole number from 2"),
        ({"runs": 2, "interval": 0}, "params.interval: must be a whole number from 1"),
        ({"runs": 60, "interval": 5},
         "params.runs: the drip-feed's total (quantity times runs) 1200 is outside 1..1000"),
    ],
)  # fmt: skip
def test_a_drip_feed_needs_both_fields_and_a_total_within_the_range(
    params: dict[str, int], expected: str
) -> None:
    assert expected in reason(place("Default", quantity=20, params=params, dripfeed=True))


def test_no_params_at_all_is_read_as_none() -> None:
    nothing: object
    for nothing in (None, "", "  ", "null", "{}", {}):
        assert fields(place("Default", params=nothing)) == {"link": LINK, "quantity": "20"}


@pytest.mark.parametrize(
    ("kind", "row", "cost"),
    [
        ("Default", {"quantity": 500}, Decimal("1.000")),
        ("Package", {"quantity": None}, Decimal("2.00")),  # the rate is one package's price
        ("Custom Comments Package", {"quantity": None, "custom_data": "a"}, Decimal("2.00")),
        ("Subscriptions", {"link": None, "quantity": None,
                           "params": {"username": "a", "min": 20, "max": 500, "posts": 4}},
         Decimal("4.000")),  # at most 500 a post, four posts
        ("Subscriptions", {"link": None, "quantity": None,
                           "params": {"username": "a", "min": 20, "max": 500}},
         Decimal("1.000")),  # no end set: the first post
    ],
)  # fmt: skip
def test_the_estimated_cost_of_each_kind(kind: str, row: dict[str, Any], cost: Decimal) -> None:
    result = place(kind, **row)
    assert isinstance(result, Placement) and result.cost(Decimal("2.00")) == cost


def test_check_order_sends_the_placed_fields_and_counts_a_drip_feeds_runs_in_its_cost() -> None:
    stored = StoredPackage(package("Default", dripfeed=True), active=True, removed_at=None)
    queued = Order(
        id=1, provider="p", provider_order_id=None, service_id=7, link=LINK, quantity=100,
        custom_data=None, state=OrderState.QUEUED, status=None, status_raw=None, charge=None,
        start_counter=None, remains=None, currency=None, error=None, created_at=None,
        params='{"runs": 5, "interval": 30}',
    )  # fmt: skip
    sent = check_order(queued, stored, Decimal("1.00"), dialect=KEY)
    assert sent.verdict is Verdict.SEND and sent.cost == Decimal("1.000")
    assert sent.fields == {"link": LINK, "quantity": "100", "runs": "5", "interval": "30"}
    assert check_order(queued, stored, Decimal("0.99"), dialect=KEY).verdict is Verdict.WAIT
    refused = check_order(queued, stored, None)  # the reference dialect has no runs
    assert refused.verdict is Verdict.REJECT and refused.fields is None
    assert refused.reason == "params.runs: the api_token dialect has no field for runs"
    package_order = replace(queued, quantity=None, params=None)
    one = StoredPackage(package("Package"), active=True, removed_at=None)
    assert check_order(package_order, one, Decimal("1.99")).verdict is Verdict.WAIT


def test_orders_sent_since_the_balance_was_read_count_as_they_were_judged() -> None:
    rate = Decimal("2.00")
    spent = [
        (rate, "Default", 100, '{"runs": 5, "interval": 30}'),  # 500 units: 1.00
        (rate, "package", None, None),  # one package: 2.00
        (rate, "Subscriptions", None, {"username": "a", "min": 1, "max": 250, "posts": 2}),
        (rate, "Default", "lots", "garbage"),  # no order anyone sent: nothing
        (rate, "Default", 50, '{"runs": true}'),  # runs unreadable: one run, 0.10
    ]
    funds = Funds(Decimal("10"), spent)  # type: ignore[arg-type]
    assert available_funds(funds) == Decimal("10") - Decimal("1.00") - 2 - 1 - Decimal("0.10")


@pytest.mark.parametrize(
    ("kind", "extra", "shown"),
    [
        ("Default", {}, "-"),
        ("Default", {"dripfeed": True}, "runs+interval (optional)"),
        ("Custom Comments", {}, "comments (1 per unit)"),
        ("Comment Replies", {}, "username, comments, no quantity"),
        ("Subscriptions", {}, "username, min, max, posts, old_posts, delay, expiry (optional), "
                              "no link, no quantity"),
        ("Whatever", {}, "unknown type"),
    ],
)  # fmt: skip
def test_what_a_package_needs_reads_for_a_person(
    kind: str, extra: dict[str, Any], shown: str
) -> None:
    assert needs(package(kind, **extra)) == shown


# -- the property: valid params are sent as expected, anything else is refused ------------

_WORD = st.text(string.ascii_letters + string.digits + "._#", min_size=1, max_size=12)
_RANGES = {"answer_number": (1, 9), "min": (10, 100), "max": (200, 1000)}


def _number_as_written(value: int) -> st.SearchStrategy[object]:
    """A count as a consumer may write it: a JSON number, digits, a whole float."""
    return st.sampled_from([value, str(value), f" {value} ", float(value), Decimal(value)])


@st.composite
def valid_rows(draw: st.DrawFn) -> tuple[str, dict[str, Any], dict[str, str]]:
    """A valid row of a type drawn at random, and the fields it must give."""
    kind = draw(st.sampled_from(sorted(TYPES)))
    t = TYPES[kind]
    quantity = draw(st.integers(10, 40)) if t.quantity else None
    row: dict[str, Any] = {"link": LINK if t.link else None, "quantity": quantity}
    expected: dict[str, str] = {}
    if t.link:
        expected["link"] = LINK
    if quantity is not None:
        expected["quantity"] = str(quantity)
    params: dict[str, object] = {}
    for name in t.needs:
        count = quantity if name == t.per_unit else draw(st.integers(1, 4))
        words = draw(st.lists(_WORD, min_size=count or 1, max_size=count or 4))
        if name == "comments":
            row["custom_data"] = "\n".join(words)
            expected["comments"] = "\n".join(words)
        elif name in ("usernames", "hashtags", "groups", "keywords"):
            params[name] = draw(st.sampled_from(["\n".join(words), "\r\n".join(words), words]))
            expected[name] = "\n".join(words)
        elif name in _RANGES:
            number = draw(st.integers(*_RANGES[name]))
            params[name] = draw(_number_as_written(number))
            expected[name] = str(number)
        else:
            params[name] = words[0]
            expected[name] = words[0]
    if bool(t.may) and draw(st.booleans()):  # a subscription may set its posts
        posts = draw(st.integers(1, 9))
        params["posts"] = draw(_number_as_written(posts))
        expected["posts"] = str(posts)
    if bool(params) and draw(st.booleans()):  # as the text a consumer's INSERT writes
        row["params"] = json.dumps({k: _plain(v) for k, v in params.items()})
    else:  # as a driver decodes a JSON column
        row["params"] = params
    return kind, row, expected


def _plain(value: object) -> object:
    """A Decimal as JSON writes a number."""
    return int(value) if isinstance(value, Decimal) else value


@given(valid_rows())
@settings(max_examples=300, deadline=None)
def test_valid_params_of_every_type_are_sent_as_the_provider_expects(
    case: tuple[str, dict[str, Any], dict[str, str]],
) -> None:
    kind, row, expected = case
    assert fields(place(kind, low=10, high=1000, **row)) == expected


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                  max_size=4),
    max_leaves=12,
)  # fmt: skip
_FIELD = st.sampled_from(
    ["runs", "interval", "usernames", "hashtags", "hashtag", "username", "media",
     "answer_number", "groups", "keywords", "min", "max", "posts", "old_posts", "delay",
     "expiry", "link", "quantity", "comments", "custom_data", "nonsense", ""]
)  # fmt: skip
_PARAMS = (
    _JSON
    | st.dictionaries(_FIELD, _JSON, max_size=6)
    | st.dictionaries(_FIELD, _JSON, max_size=6).map(json.dumps)
    | st.text(max_size=40)
    | st.binary(max_size=40)
    | st.floats()
)


@given(
    kind=st.sampled_from([*sorted(TYPES), "nonsense"]),
    params=_PARAMS,
    quantity=st.none() | st.integers(-5, 2000) | st.booleans() | st.text(max_size=4),
    link=st.none() | st.text(max_size=10),
    custom_data=st.none() | st.text(max_size=30),
    dripfeed=st.booleans(),
    dialect=st.sampled_from([KEY, API_TOKEN]),
)
@settings(max_examples=600, deadline=None)
def test_any_params_at_all_give_fields_or_a_one_line_reason_and_never_raise(
    kind: str, params: object, quantity: object, link: str | None, custom_data: str | None,
    dripfeed: bool, dialect: Any,
) -> None:  # fmt: skip
    result = place(kind, link=link, quantity=quantity, custom_data=custom_data, params=params,
                   dialect=dialect, dripfeed=dripfeed)  # fmt: skip
    if isinstance(result, Refusal):
        assert result.reason and "\n" not in result.reason and len(result.reason) < 400
        return
    # Whatever went through is what the type takes, under names the dialect has, as text.
    t = TYPES[type_key(kind)]
    allowed = {"link", "quantity", dialect.comments_field, *t.fields, *dialect.order_fields}
    assert set(result.fields) <= allowed
    assert all(isinstance(v, str) and v == v.strip() and v for v in result.fields.values())
    assert ("link" in result.fields) == t.link and ("quantity" in result.fields) == t.quantity


@pytest.mark.parametrize("kind", ["Package", "Mentions Custom List", "Comment Replies"])
@pytest.mark.parametrize("one", [1, "1"])
def test_a_panel_s_quantity_of_one_for_a_type_without_quantity_is_not_sent(
    kind: str, one: object
) -> None:
    (row, expected) = VALID[kind]
    assert fields(place(kind, **(row | {"quantity": one}))) == expected
    assert "quantity" not in expected
    for other in (2, 0, "01", True, 1.0):
        assert "takes no quantity" in reason(place(kind, **(row | {"quantity": other})))


def test_an_expiry_before_yesterday_is_refused_when_today_is_known() -> None:
    today = date(2027, 3, 10)
    row = VALID["Subscriptions"][0]

    def judged(expiry: str) -> Placement | Refusal:
        params = dict(row["params"]) | {"expiry": expiry}
        return placement(
            package("Subscriptions"), link=None, quantity=None, custom_data=None,
            params=params, dialect=KEY, today=today,
        )  # fmt: skip

    assert fields(judged("09/03/2027"))["expiry"] == "09/03/2027"  # a day of slack
    assert fields(judged("10/03/2027"))["expiry"] == "10/03/2027"
    assert reason(judged("08/03/2027")) == "params.expiry: 08/03/2027 is in the past"


@pytest.mark.parametrize("name", ["\n", "user\nname", "x" * 41, "", "1st", "na me", "ü"])
def test_a_params_name_that_is_no_field_name_is_refused_in_one_line(name: str) -> None:
    refused = reason(place("Comment Likes", params={name: None}))
    assert refused.startswith("params: ") and "is no field name" in refused
    assert len(refused) < 120


@pytest.mark.parametrize("text", ["ab\x00c", "\x00"])
def test_a_nul_in_a_value_is_refused_before_sending(text: str) -> None:
    row = VALID["Comment Likes"][0]
    refused = reason(place("Comment Likes", **(row | {"params": {"username": text}})))
    assert refused == "params.username: holds a NUL character, which is not text"


def test_an_expiry_in_an_early_year_is_written_with_four_digits_and_judged() -> None:
    row = VALID["Subscriptions"][0]
    params = dict(row["params"]) | {"expiry": "1/1/0999"}

    def judged(today: date | None) -> Placement | Refusal:
        return placement(
            package("Subscriptions"), link=None, quantity=None, custom_data=None,
            params=params, dialect=KEY, today=today,
        )  # fmt: skip

    assert fields(judged(None))["expiry"] == "01/01/0999"
    assert reason(judged(date(2027, 3, 10))) == "params.expiry: 01/01/0999 is in the past"
