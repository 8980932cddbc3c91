"""What each order type takes, as a panel checks an ``add``: the fields a type needs, the
ones it may take, whether it has a link and a quantity, and which list must hold one line
per unit ordered.

Field names are the ``key`` (Perfect Panel) dialect's; the ``api_token`` dialect documents
only its comments field, so a type needing any other field cannot be ordered through it.
The simulator is stricter than most panels on one point: a field the type does not take is
refused, not ignored, so a client sending one shows in a test.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Final

# The form fields of every `add`, whatever the type (the key and the service field are the
# dialect's and are checked before these rules).
COMMON: Final = frozenset({"action", "link", "quantity"})
COMMENTS: Final = "comments"  # the key dialect's comments field; renamed for api_token


@dataclass(frozen=True)
class TypeRule:
    needs: tuple[str, ...] = ()  # fields besides link and quantity, all required
    may: tuple[str, ...] = ()  # optional fields
    link: bool = True
    quantity: bool = True
    # A field of one entry per line, one entry per unit ordered: its count must equal the
    # quantity, or for a type without quantity it is the order's size.
    per_unit: str | None = None

    @property
    def fields(self) -> frozenset[str]:
        return frozenset(self.needs) | frozenset(self.may)


# By type, lower case with single spaces; Default's drip-feed fields are offered only by a
# package whose catalog entry says `dripfeed`.
RULES: Final[Mapping[str, TypeRule]] = {
    "default": TypeRule(),
    "package": TypeRule(quantity=False),
    "custom comments": TypeRule(needs=(COMMENTS,), per_unit=COMMENTS),
    "custom comments package": TypeRule(needs=(COMMENTS,), quantity=False, per_unit=COMMENTS),
    "mentions": TypeRule(needs=("usernames",), per_unit="usernames"),
    "mentions with hashtags": TypeRule(needs=("usernames", "hashtags"), per_unit="usernames"),
    "mentions custom list": TypeRule(needs=("usernames",), quantity=False, per_unit="usernames"),
    "mentions hashtag": TypeRule(needs=("hashtag",)),
    "mentions user followers": TypeRule(needs=("username",)),
    "mentions media likers": TypeRule(needs=("media",)),
    "comment likes": TypeRule(needs=("username",)),
    "comment replies": TypeRule(needs=("username", COMMENTS), quantity=False, per_unit=COMMENTS),
    "poll": TypeRule(needs=("answer_number",)),
    "invites from groups": TypeRule(needs=("groups",)),
    "seo": TypeRule(needs=("keywords",)),
    "subscriptions": TypeRule(
        needs=("username", "min", "max"),
        may=("posts", "old_posts", "delay", "expiry"),
        link=False,
        quantity=False,
    ),
}
DRIP_FEED: Final = ("runs", "interval")
# The fields beyond link and quantity each dialect's API documents (None: every field of
# the rules). The reference api_token dialect documents only its comments field.
DOCUMENTED: Final[Mapping[str, frozenset[str] | None]] = {
    "key": None,
    "api_token": frozenset({COMMENTS}),
}
# Fields that hold a whole number, and the least each may be.
_COUNTS: Final = {"runs": 2, "interval": 1, "answer_number": 1, "min": 1, "max": 1,
                  "posts": 1, "old_posts": 0, "delay": 0}  # fmt: skip


def type_key(package_type: str) -> str:
    """A package type as the rules are keyed: case and spacing do not matter."""
    return " ".join(package_type.split()).lower()


def lines(text: str | None) -> list[str]:
    """The entries of a one-per-line field; blank lines are not entries."""
    return [line for line in (text or "").splitlines() if line.strip()]


def expiry_date(text: str) -> date | None:
    """A subscription's ``expiry`` (d/m/Y), or None when it is not a real date."""
    try:
        return datetime.strptime(text.strip(), "%d/%m/%Y").date()
    except ValueError:
        return None


def check(
    rule: TypeRule,
    form: Mapping[str, str],
    *,
    dripfeed: bool,
    comments_field: str,
    documented: frozenset[str] | None = None,
) -> str | None:
    """Why a panel refuses these ``add`` fields (besides the key and the service), or
    None when the type's rules hold. Quantity bounds and funds are the caller's.
    ``documented``: the fields the dialect's API has, None for all of them."""
    if documented is not None and not rule.fields <= documented:
        return "This service cannot be ordered through the API"
    name = {f: comments_field if f == COMMENTS else f for f in (*rule.fields, *DRIP_FEED)}
    allowed = {name[f] for f in rule.fields} | COMMON
    if dripfeed and rule.quantity and documented is None:
        allowed |= set(DRIP_FEED)
    allowed -= {"link"} if not rule.link else set()
    allowed -= {"quantity"} if not rule.quantity else set()
    if unexpected := sorted(set(form) - allowed):
        return f"Unexpected field: {unexpected[0]}"
    if rule.link and not form.get("link", "").strip():
        return "Incorrect link"
    if rule.quantity and not form.get("quantity", "").isdigit():
        return "Incorrect quantity"
    if missing := [name[f] for f in rule.needs if not form.get(name[f], "").strip()]:
        return f"Incorrect {missing[0]}"
    return _values(rule, form, name)


def _values(rule: TypeRule, form: Mapping[str, str], name: Mapping[str, str]) -> str | None:
    """Why the values of fields present are refused: counts, dates, lines per unit."""
    for field, least in _COUNTS.items():
        if field in form and not (form[field].isdigit() and int(form[field]) >= least):
            return f"Incorrect {field}"
    if ("runs" in form) != ("interval" in form):
        return "Drip-feed needs both runs and interval"
    if rule.per_unit is not None and rule.quantity:
        per_unit = name[rule.per_unit]
        if len(lines(form.get(per_unit))) != int(form["quantity"]):
            return f"The count of {per_unit} must equal quantity"
    if "min" in form and int(form["min"]) > int(form["max"]):
        return "Min must not be greater than max"
    if "expiry" in form and expiry_date(form["expiry"]) is None:
        return "Incorrect expiry date"
    return None


def size(rule: TypeRule, form: Mapping[str, str], comments_field: str) -> int | None:
    """The units an accepted ``add`` orders, every drip-feed run included: what its price
    per 1000 and the package's bounds apply to. None for a type priced whole (a Package's
    rate is its price; a subscription is charged by the posts it picks up)."""
    if rule.quantity:
        return int(form["quantity"]) * int(form.get("runs", "1"))
    if rule.per_unit is not None:
        return len(lines(form.get(comments_field if rule.per_unit == COMMENTS else rule.per_unit)))
    return None
