"""The API v2 dialects, described as data.

Every field name that differs between providers lives in one ``Dialect``; the client builds
requests from it and nothing else in syncd knows which dialect a provider speaks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    key_field: str  # the form field that carries the token
    list_action: str  # the action that returns the catalog
    package_field: str  # the field of `add` naming the service
    comments_field: str  # the field of `add` carrying custom comments
    # The actions beyond the four every panel has (refill, refill_status, cancel): asking
    # a dialect for one it does not offer is refused before anything is sent.
    offers: frozenset[str] = frozenset()


DIALECTS: dict[str, Dialect] = {
    d.name: d
    for d in (
        # The reference dialect, as the provider API documentation describes it.
        Dialect("api_token", "api_token", "packages", "package", "custom_data"),
        # The classic Perfect Panel dialect.
        Dialect(
            "key",
            "key",
            "services",
            "service",
            "comments",
            offers=frozenset({"refill", "refill_status", "cancel"}),
        ),
    )
}
