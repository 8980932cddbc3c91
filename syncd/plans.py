"""Intents: what a job decided to write, computed by pure planning functions.

A job fetches, asks its planner ``plan_*(stored, fetched, now)`` for one of these, and hands
it to the storage layer, which writes it in one transaction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from syncd.models import Balance, ChangeKind, Package


@dataclass(frozen=True, slots=True)
class PackageChange:
    service_id: int
    change: ChangeKind
    field: str | None = None
    old_value: str | None = None
    new_value: str | None = None


@dataclass(frozen=True)
class CatalogPlan:
    provider: str
    now: datetime
    insert: list[Package] = field(default_factory=list)
    update: list[Package] = field(default_factory=list)  # written whole, active again
    deactivate: list[int] = field(default_factory=list)
    changes: list[PackageChange] = field(default_factory=list)
    unchanged: int = 0

    def count(self, kind: ChangeKind) -> int:
        """Packages with a change of ``kind`` (an updated package counts once)."""
        return len({c.service_id for c in self.changes if c.change is kind})


@dataclass(frozen=True)
class BalancePlan:
    provider: str
    now: datetime
    balance: Balance
    snapshot: bool  # the balance differs from the last snapshot: record a new one
