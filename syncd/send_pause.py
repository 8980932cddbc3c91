"""Pausing the sending to a provider after a call whose outcome is unknown, as pure rules.

A call that changes something at the provider (``add``, ``refill``, ``cancel``) whose
answer was lost or unreadable (a timeout after it left, a 5xx, an HTML page, broken
JSON, a reset, an order id another local order already holds) leaves its order or
request ``ambiguous``: a person must look at the provider's panel. A provider that
answers that way once is likely to answer the next call that way too, so nothing more
is sent to it for a while:

- the pause starts in the transaction that records the unknown outcome, and waits
  ``wait_after(pauses)`` before a trial: 1 minute, doubling with each unknown outcome in
  a row, at most 15 minutes;
- while it waits, nothing is claimed for sending: queued orders and requests stay
  queued with the reason in ``error`` (``waiting_reason``);
- once the wait is over, a harmless call (``balance``) must succeed, and then one order
  or one request goes alone (the trial);
- a clear answer to any call that changes something (taken, or refused with an error)
  lifts the pause, and the queue goes on; another unknown outcome pauses again, for
  twice as long; a call that surely never arrived (cannot connect) leaves the pause as
  it is.

Whether paused or not, one call that changes something is in flight per provider at a
time, across every process (``in_flight``): a claim sends nothing while an order or a
request of the provider is ``submitting``, so an unknown outcome is known (and pauses)
before the next call can leave. A spell of faults shorter than the first wait thus
costs one ambiguous order or request per provider (the trial comes after the spell),
however many were queued meanwhile, and however many processes send. A row made
ambiguous because syncd's own sender died is no sign of the provider's and pauses
nothing.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta

from syncd.models import SendPause

FIRST_WAIT = timedelta(minutes=1)
LONGEST_WAIT = timedelta(minutes=15)
NOT_PAUSED = SendPause()
WAITING = "waiting: sending to "  # how the error of an order or request held by a pause begins
# Why an order or request that would be sent is left queued, untouched, for now: another
# call that changes something at the provider is in flight (``in_flight``).
IN_FLIGHT = "another call to "


class Gate(enum.Enum):
    """What a sender may do now."""

    OPEN = "open"  # not paused: send as usual
    CLOSED = "closed"  # paused and the wait is not over: send nothing
    TRIAL = "trial"  # the wait is over: a harmless call, then one alone


class Outcome(enum.Enum):
    """What a call that changes something at the provider tells of the provider."""

    CLEAR = "clear"  # it answered (taken, or refused with an error)
    UNKNOWN = "unknown"  # the answer was lost or cannot be read
    NOT_SENT = "not sent"  # surely never arrived: nothing learnt


def wait_after(pauses: int) -> timedelta:
    """How long sending waits after the ``pauses``-th unknown outcome in a row."""
    if pauses <= 0:
        return timedelta(0)
    # The exponent is bounded: a count someone wrote by hand must not overflow.
    return min(LONGEST_WAIT, FIRST_WAIT * (1 << min(pauses - 1, 16)))


def gate(pause: SendPause, now: datetime) -> Gate:
    if not pause.paused:
        return Gate.OPEN
    if pause.resume_at is not None and now < pause.resume_at:
        return Gate.CLOSED
    return Gate.TRIAL


def after(pause: SendPause, outcome: Outcome, reason: str, now: datetime) -> SendPause | None:
    """The pause after a call's ``outcome`` (``reason``: why, when it is unknown); None
    when it stays as it is."""
    if outcome is Outcome.UNKNOWN:
        pauses = max(pause.pauses, 0) + 1
        return SendPause(pause.paused_at or now, now + wait_after(pauses), pauses, reason)
    if outcome is Outcome.CLEAR and (pause.paused or pause.pauses):
        return NOT_PAUSED
    return None


def holds(
    pause: SendPause, provider: str, now: datetime, *, probed: bool, busy: bool,
    probe_failed: str | None = None,
) -> str | None:  # fmt: skip
    """Why nothing may be claimed for sending now (the queued rows' ``error``), or None
    when a claim may send: not paused, or a trial whose harmless call succeeded
    (``probed``) while nothing else of the provider is being sent (``busy``). A trial
    claims one order or request alone. ``probe_failed``: why the harmless call before
    the trial failed, told in the reason."""
    match gate(pause, now):
        case Gate.OPEN:
            return None
        case Gate.TRIAL if probed and not busy:
            return None
    return waiting_reason(provider, pause, now, probe_failed=probe_failed)


def in_flight(provider: str) -> str:
    """Why a claim sends nothing now although nothing pauses it: an order or request of
    the provider is ``submitting`` (this process's, or another's). At most one call that
    changes something at a provider is in flight at a time, across every process, so a
    spell of faults leaves one unknown outcome, not one per sender. Nothing is written
    for the rows left queued: the next pass takes them."""
    return f"{IN_FLIGHT}{provider} is in flight (add, refill or cancel): one at a time"


def waiting_reason(
    provider: str, pause: SendPause, now: datetime, *, probe_failed: str | None = None
) -> str:
    """``waiting: sending to sim paused until 2026-11-25 12:01:00 UTC after order 12's
    outcome was unknown (...)``; once the wait is over, that the harmless call before
    the trial failed, and why (``probe_failed``)."""
    why = f" after {pause.reason}" if pause.reason else ""
    if pause.resume_at is not None and now < pause.resume_at:
        return f"{WAITING}{provider} paused until {_time(pause.resume_at)}{why}"
    since = f" since {_time(pause.paused_at)}" if pause.paused_at is not None else ""
    if probe_failed is not None:
        return (
            f"{WAITING}{provider} paused{since}{why}; the harmless call (balance) before "
            f"the trial failed: {probe_failed}"
        )
    return (
        f"{WAITING}{provider} paused{since}{why}; one goes alone once a harmless call "
        "(balance) succeeds"
    )


def paused_text(provider: str, pause: SendPause, now: datetime) -> str:
    """One line for ``syncd status`` and a job's failure: since when, until when, why."""
    since = f" since {_time(pause.paused_at)}" if pause.paused_at is not None else ""
    if pause.resume_at is not None and now < pause.resume_at:
        until = f", until {_time(pause.resume_at)}"
    else:
        until = ", trying again once a harmless call (balance) succeeds"
    why = f", after {pause.reason}" if pause.reason else ""
    return f"sending to {provider} paused{since}{until}{why}"


def order_outcome(state: object) -> Outcome:
    """What the state a sent order was recorded in tells of the provider."""
    text = str(state)
    if text == "ambiguous":
        return Outcome.UNKNOWN
    if text in ("active", "rejected"):
        return Outcome.CLEAR
    return Outcome.NOT_SENT


def requests_outcome(states: list[object]) -> Outcome:
    """What one refill or cancel call tells of the provider, by the states its requests
    were recorded in: unknown when any of them is ambiguous (the provider may hold it),
    clear when it answered for at least one, else nothing learnt."""
    texts = [str(state) for state in states]
    if "ambiguous" in texts:
        return Outcome.UNKNOWN
    if any(text in ("sent", "done", "rejected") for text in texts):
        return Outcome.CLEAR
    return Outcome.NOT_SENT


def unknown_reason(what: str, error: str | None) -> str:
    """``order 12's outcome was unknown (HTTP 502 ...)``: the pause's reason."""
    detail = (error or "").removeprefix("outcome unknown: ")
    return f"{what}'s outcome was unknown" + (f" ({detail})" if detail else "")


def after_order(
    pause: SendPause, order_id: int, state: object, error: str | None, now: datetime
) -> SendPause | None:
    """The pause after a sent order was recorded in ``state`` (with ``error``); None
    when it stays as it is."""
    reason = unknown_reason(f"order {order_id}", error)
    return after(pause, order_outcome(state), reason, now)


def after_requests(
    pause: SendPause, answered: list[tuple[str, object, str | None]], now: datetime
) -> SendPause | None:
    """The pause after one refill or cancel call, by what each of its requests was
    recorded as: (what it is, e.g. "the refill of order 5 (request 7)", its state, its
    error); None when it stays as it is."""
    unknown = [(what, error) for what, state, error in answered if str(state) == "ambiguous"]
    reason = unknown_reason(*unknown[0]) if unknown else ""
    return after(pause, requests_outcome([state for _, state, _ in answered]), reason, now)


def _time(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"
