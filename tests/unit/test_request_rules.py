"""The rules of a request's life (``syncd.order_requests``), for any answer a provider
may give and any row a consumer may write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from syncd import order_requests as rules
from syncd.errors import (
    AuthError,
    MalformedReplyError,
    ProviderError,
    RefusedError,
    TransientError,
)
from syncd.lifecycle import MAX_BACKOFF
from syncd.models import (
    OrderLookupError,
    RefillAnswer,
    RefillState,
    RefillStatus,
    RequestAnswer,
    RequestKind,
    RequestRefused,
    RequestTaken,
    UnreadableAnswer,
)
from syncd.order_requests import Request, RequestState

NOW = datetime(2026, 11, 27, 12, tzinfo=UTC)
BASE = timedelta(minutes=2)

kinds = st.sampled_from(list(RequestKind))
answers = st.one_of(
    st.none(),
    st.builds(RequestTaken, st.one_of(st.none(), st.integers(1, 10**12))),
    st.builds(RequestRefused, st.text(max_size=20)),
    st.builds(UnreadableAnswer, st.text(max_size=20)),
)
refill_answers = st.one_of(
    st.none(),
    st.builds(RefillState, st.sampled_from(list(RefillStatus)), st.text(max_size=10)),
    st.builds(OrderLookupError, st.text(max_size=20)),
    st.builds(UnreadableAnswer, st.text(max_size=20)),
)
offsets = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=3))


def request(kind: RequestKind, **values: object) -> Request:
    return Request(id=1, order_id=7, kind=kind, state=RequestState.SUBMITTING,
                   provider="p", **values)  # type: ignore[arg-type]  # fmt: skip


@given(kinds, answers)
def test_an_answer_settles_a_request_and_only_a_lost_one_alerts(
    kind: RequestKind, answer: RequestAnswer | None
) -> None:
    step = rules.answered(request(kind), answer, NOW, BASE)
    state = step.update.state
    # Never back to queued by an answer: it may have been taken.
    assert state is not RequestState.QUEUED
    assert state in (RequestState.SENT, RequestState.DONE, RequestState.REJECTED,
                     RequestState.AMBIGUOUS)  # fmt: skip
    assert (state is RequestState.AMBIGUOUS) is (step.alert is not None)
    assert (state is RequestState.AMBIGUOUS) is not isinstance(
        answer, RequestTaken | RequestRefused
    )
    assert step.update.submit_owner is None  # no longer anyone's to send
    if state is RequestState.SENT:
        assert kind is RequestKind.REFILL and step.update.next_check_at == NOW + BASE
    change = rules.change_of(request(kind), step.update)
    assert change is not None and change.state_old == "submitting"


@given(
    st.sampled_from([
        TransientError("p", "refused", maybe_processed=False),
        TransientError("p", "timeout", maybe_processed=True),
        AuthError("p", "bad key"),
        RefusedError("p", "Incorrect request"),
        MalformedReplyError("p", "html"),
    ]),
    kinds,
)  # fmt: skip
def test_a_failed_call_resends_only_what_surely_never_left(
    error: ProviderError, kind: RequestKind
) -> None:
    step = rules.failed(request(kind), error, NOW)
    left = not (isinstance(error, AuthError) or (
        isinstance(error, TransientError) and not error.maybe_processed))  # fmt: skip
    if isinstance(error, RefusedError):
        assert step.update.state is RequestState.REJECTED
    elif left:
        assert step.update.state is RequestState.AMBIGUOUS and step.alert is not None
    else:
        assert step.update.state is RequestState.QUEUED and step.alert is None


@given(refill_answers, offsets, offsets, st.sampled_from(list(RefillStatus)))
def test_a_refill_check_ends_only_on_a_final_status_and_backs_off_within_bounds(
    answer: RefillAnswer | None,
    checked_ago: timedelta,
    wait: timedelta,
    before: RefillStatus,
) -> None:
    sent = Request(
        id=1, order_id=7, kind=RequestKind.REFILL, state=RequestState.SENT, status=before,
        checked_at=NOW - checked_ago, next_check_at=NOW - checked_ago + wait,
    )  # fmt: skip
    update = rules.checked(sent, answer, NOW, BASE)
    final = isinstance(answer, RefillState) and answer.status.is_final
    assert (update.state is RequestState.DONE) is final
    if final:
        assert update.next_check_at is None and update.finished_at == NOW
    else:
        assert isinstance(update.next_check_at, datetime)
        assert NOW + BASE <= update.next_check_at <= NOW + MAX_BACKOFF
