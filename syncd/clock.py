"""The wall clock, in UTC: the one place syncd asks it (jobs take it as a parameter)."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    return datetime.now(UTC)
