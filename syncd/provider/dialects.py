"""The API v2 dialects, described as data.

Every field and action name that differs between providers lives in one ``Dialect``; the
client builds its calls from it, the simulator serves what it describes, and nothing else in
syncd knows which dialect a provider speaks. Adding a dialect is one entry in ``DIALECTS``;
adding an optional action is one name in ``OPTIONAL_ACTIONS`` and the ``offers`` of the
dialects that have it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

# The actions every panel answers, by syncd's own names for them ("packages" is the catalog,
# whatever the dialect calls it on the wire).
CORE_ACTIONS: Final = ("packages", "balance", "status", "add")
# The actions only some dialects offer: asking a dialect for one it does not offer is
# refused before anything is sent.
OPTIONAL_ACTIONS: Final = ("refill", "refill_status", "cancel")


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    key_field: str  # the form field that carries the token
    list_action: str  # the action that returns the catalog
    package_field: str  # the field of `add` naming the service
    comments_field: str  # the field of `add` carrying custom comments
    offers: frozenset[str] = frozenset()  # the OPTIONAL_ACTIONS it has
    # The fields of `add` it documents besides the service, link, quantity and comments,
    # spelled as the provider spells them; an order type needing another one cannot be
    # ordered through it (``syncd.order_types``).
    order_fields: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if unknown := self.offers - set(OPTIONAL_ACTIONS):
            raise ValueError(f"dialect {self.name}: no such optional action {sorted(unknown)}")

    @property
    def actions(self) -> dict[str, str]:
        """Every action the dialect has: its name on the wire to syncd's name for it, the
        core actions first, then the optional ones it offers, each in its tuple's order."""
        wire = {"packages": self.list_action}
        return {
            wire.get(action, action): action
            for action in (*CORE_ACTIONS, *(a for a in OPTIONAL_ACTIONS if a in self.offers))
        }


# The fields of `add` Perfect Panel documents for its order types (drip-feed, mentions,
# polls, subscriptions...) besides the service, link, quantity and comments.
_PERFECT_PANEL_FIELDS: Final = frozenset({
    "runs", "interval", "usernames", "hashtags", "hashtag", "username", "media",
    "answer_number", "groups", "keywords", "min", "max", "posts", "old_posts", "delay",
    "expiry",
})  # fmt: skip

DIALECTS: dict[str, Dialect] = {
    d.name: d
    for d in (
        # The reference dialect, as the provider API documentation describes it: `add`
        # takes comments (custom_data) and nothing more.
        Dialect("api_token", "api_token", "packages", "package", "custom_data"),
        # The classic Perfect Panel dialect.
        Dialect(
            "key",
            "key",
            "services",
            "service",
            "comments",
            offers=frozenset(OPTIONAL_ACTIONS),
            order_fields=_PERFECT_PANEL_FIELDS,
        ),
    )
}
