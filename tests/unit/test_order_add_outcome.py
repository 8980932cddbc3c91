"""The one line ``syncd order add`` ends with: every outcome says what became of the
order, never a bare ``None``."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from syncd.cli.exits import EXIT_JOB_FAILED, EXIT_OK
from syncd.cli.orders import add_outcome
from syncd.models import Order, OrderState

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
ORDER = Order(
    id=12, provider="sim", provider_order_id=None, service_id=100, link="https://x.example/p",
    quantity=100, custom_data=None, state=OrderState.QUEUED, status=None, status_raw=None,
    charge=None, start_counter=None, remains=None, currency=None, error=None, created_at=NOW,
)  # fmt: skip


@pytest.mark.parametrize(
    ("state", "provider_order_id", "error", "in_flight", "code", "says"),
    [
        (OrderState.ACTIVE, 77, None, False, EXIT_OK, "taken by sim as its order 77"),
        (OrderState.REJECTED, None, "Bad link", False, EXIT_JOB_FAILED, "rejected: Bad link"),
        (OrderState.SUBMITTING, None, None, False, EXIT_OK, "the running daemon) is sending"),
        (OrderState.QUEUED, None, None, True, EXIT_OK, "another call to sim is in flight"),
        (OrderState.QUEUED, None, "waiting: sending to sim paused until", False,
         EXIT_JOB_FAILED, "stays queued, not sent (waiting: sending to sim paused"),
        (OrderState.QUEUED, None, None, False, EXIT_JOB_FAILED, "not sent (not sent)"),
        (OrderState.AMBIGUOUS, None, "outcome unknown: reset", False, EXIT_JOB_FAILED,
         "syncd order resolve 12"),
    ],
)  # fmt: skip
def test_every_outcome_of_order_add_is_one_clear_line(
    state: OrderState, provider_order_id: int | None, error: str | None, in_flight: bool,
    code: int, says: str,
) -> None:  # fmt: skip
    order = replace(ORDER, state=state, provider_order_id=provider_order_id, error=error)
    got_code, line = add_outcome(order, "sim", in_flight=in_flight)
    assert (got_code, "None" in line) == (code, False), line
    assert says in line and line.startswith("order 12 "), line
