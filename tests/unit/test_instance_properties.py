"""Properties of the pure decisions behind several instances: which leases to hand over
and take, when a job taken over runs, and how a feed row is printed, for any input."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import example, given
from hypothesis import strategies as st

from syncd.daemon.service import next_run
from syncd.deadlines import CLOCK_SKEW
from syncd.jobs.leases import plan_leases
from syncd.storage.feeds import _json

names = st.lists(st.text("abcdefgh", min_size=1, max_size=3), unique=True, max_size=12)


@given(
    providers=names,
    data=st.data(),
    live=st.integers(min_value=0, max_value=20),
)
def test_a_lease_plan_keeps_this_instance_within_its_share(
    providers: list[str], data: st.DataObject, live: int
) -> None:
    held = data.draw(st.sets(st.sampled_from(providers)) if providers else st.just(set()))
    others = [p for p in providers if p not in held]
    elsewhere = data.draw(st.sets(st.sampled_from(others)) if others else st.just(set()))
    busy = data.draw(st.sets(st.sampled_from(sorted(held))) if held else st.just(set()))
    plan = plan_leases(providers, held, elsewhere, live, busy.__contains__)

    share = math.ceil(len(providers) / max(1, live))
    assert set(plan.release) <= held - busy  # only idle leases are handed over
    assert not set(plan.take) & (held | elsewhere)  # only free ones are taken
    assert len(plan.take) == len(set(plan.take)) and len(plan.release) == len(set(plan.release))
    after = len(held) - len(plan.release) + len(plan.take)
    assert after <= max(share, len(held) - len(plan.release))  # never grows past the share
    if len(held) > share:  # too many: gives back what it can, takes nothing
        assert not plan.take
        assert len(plan.release) == min(len(held) - share, len(held - busy))
    free = [p for p in providers if p not in held and p not in elsewhere]
    if len(held) <= share:  # room: takes free ones up to the share
        assert len(plan.take) == min(share - len(held), len(free))


moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@given(
    last=st.none() | moments,
    every=st.timedeltas(min_value=timedelta(seconds=1), max_value=timedelta(days=30)),
    now=moments,
)
def test_a_job_taken_over_runs_neither_before_now_nor_after_one_interval_from_now(
    last: datetime | None, every: timedelta, now: datetime
) -> None:
    due = next_run(last, every, now)
    assert now <= due <= now + every + CLOCK_SKEW
    if last is None or last + every <= now:
        assert due == now  # never ran, or overdue: at once


# What a database driver hands back for a column: scalars, and JSON documents for payload.
json_documents = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=6,
)
values = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | st.binary()
    | st.decimals(allow_nan=False, allow_infinity=False)
    | moments
    | json_documents
    | st.sampled_from(['{"x": NaN}', "[Infinity]", "-Infinity", '{"text": "ok"}', "{not json"])
)


@given(key=st.sampled_from(["id", "changed_at", "created_at", "payload", "charge_new"]),
       value=values)  # fmt: skip
@example(key="payload", value='{"x": NaN}')  # Python's json reads it; JSON has no NaN
def test_any_stored_value_prints_as_ascii_json(key: str, value: object) -> None:
    shown = _json(key, value)
    text = json.dumps({key: shown}, allow_nan=False)  # valid JSON: no NaN, no bytes
    assert text.isascii()
    if isinstance(value, Decimal):
        assert Decimal(shown) == value  # amounts keep every digit
