"""Rows no job would ever take, settled alone with their reason.

A shop writes ``orders`` rows by hand, and some of them can never be sent or checked as
they are: a ``state`` that is no state, a provider nobody configured, a queued row that
already carries a provider order id (a "retry" of an order the provider may well hold).
Left alone they would sit unnoticed forever, or worse, be sent again. ``plan_stray``
decides (pure) what becomes of each; the orders job writes it before it submits anything.
"""

from __future__ import annotations

from syncd.jobs.status import order_alert
from syncd.jobs.submit import ambiguous_alert
from syncd.models import Event, Order, OrderState
from syncd.plans import Settlement

_UNSENT = (OrderState.QUEUED, OrderState.SUBMITTING)


def plan_stray(order: Order, *, provider_known: bool, holds_id: bool) -> Settlement | None:
    """What becomes of a row no job would take, or None when it is fine as it is.

    ``holds_id``: the row has something in ``provider_order_id``, readable or not.
    """
    if not isinstance(order.state, OrderState):
        if not holds_id:
            return Settlement(OrderState.REJECTED, f"{order.problem}; nothing was sent")
        return _unknown(order, f"{order.problem}, with a provider order id")
    if order.state in _UNSENT:
        if holds_id:
            # Sending it would place a second order if the provider holds this one.
            return _unknown(
                order,
                f"{order.state} with a provider order id already: the provider may hold it "
                "(resolve with --provider-order if it does, --resend if it does not)",
            )
        if not provider_known:
            return Settlement(
                OrderState.REJECTED,
                f"unknown provider {order.provider!r} (not in the configuration); nothing was sent",
            )
    elif order.state is OrderState.ACTIVE and not provider_known:
        reason = f"unknown provider {order.provider!r} (not in the configuration)"
        alert = order_alert(Event.ORDER_MISSING, order, f"cannot be checked: {reason}")
        return Settlement(OrderState.MISSING, f"{reason}: it cannot be checked", alert)
    return None


def _unknown(order: Order, reason: str) -> Settlement:
    return Settlement(
        OrderState.AMBIGUOUS, f"outcome unknown: {reason}", ambiguous_alert(order, reason)
    )
