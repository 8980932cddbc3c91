"""The reply classifier as plain function calls: status, headers and body in, one verdict
out, with no client, no HTTP and no clock but the one passed in."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from syncd.errors import (
    AuthError,
    MalformedReplyError,
    ProviderError,
    RateLimitedError,
    RefusedError,
    TransientError,
)
from syncd.provider.verdicts import Outcome, classify, describe, one_line, retry_after
from syncd.secret import Scrubber, Secret

TOKEN = "verdict-token-5c31"
NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
SCRUB = Scrubber([Secret(TOKEN)]).scrub
RAISES: dict[Outcome, type[ProviderError] | None] = {
    Outcome.OK: None,
    Outcome.REFUSED: RefusedError,
    Outcome.AUTH: AuthError,
    Outcome.TRANSIENT: TransientError,
    Outcome.RATE_LIMITED: RateLimitedError,
    Outcome.MALFORMED: MalformedReplyError,
}
MAINTENANCE = b"<!DOCTYPE html><html><head><title>Site Maintenance</title></head></html>"


def verdict_of(status: int, body: object, **headers: str) -> tuple[Outcome, str]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    verdict = classify(status, headers, raw, now=NOW, scrub=SCRUB)
    return verdict.outcome, verdict.detail


@pytest.mark.parametrize(
    ("status", "body", "outcome", "detail"),
    [
        (200, {"balance": "1.00"}, Outcome.OK, ""),
        (200, {"order": 5042, "error": None}, Outcome.OK, ""),
        (200, [], Outcome.OK, ""),  # what an empty catalog means is the catalog's to say
        (200, {"error": "Not enough funds"}, Outcome.REFUSED, "Not enough funds"),
        (200, {"errors": {"link": ["Invalid"]}}, Outcome.REFUSED, "link: Invalid"),
        (400, {"error": "Incorrect link"}, Outcome.REFUSED, "HTTP 400 (Incorrect link)"),
        (200, {"error": "Invalid API key"}, Outcome.AUTH, "token rejected: Invalid API key"),
        (401, b"", Outcome.AUTH, "token rejected: HTTP 401"),
        (502, b"<html><title>502 Bad Gateway</title></html>", Outcome.TRANSIENT,
         'HTTP 502 (HTML page "502 Bad Gateway")'),
        (503, b"", Outcome.TRANSIENT, "HTTP 503 (empty body)"),
        (200, MAINTENANCE, Outcome.MALFORMED, 'reply is not JSON: HTML page "Site Maintenance"'),
        (200, b'{"balance": "1', Outcome.MALFORMED,
         "reply is not JSON: truncated or invalid JSON of 14 bytes"),
        (200, b"NaN", Outcome.MALFORMED, "reply is not JSON: unexpected text 'NaN'"),
        (403, MAINTENANCE, Outcome.MALFORMED, 'HTTP 403 (HTML page "Site Maintenance")'),
        (200, {"order": 5042, "error": "Not enough funds"}, Outcome.MALFORMED,
         "reply carries order id 5042 and an error (Not enough funds)"),
        (401, {"refill": "77", "error": "x"}, Outcome.MALFORMED,
         "reply carries refill id '77' and an error (x)"),
    ],
)  # fmt: skip
def test_each_kind_of_answer_has_its_outcome(
    status: int, body: object, outcome: Outcome, detail: str
) -> None:
    assert verdict_of(status, body) == (outcome, detail)


def test_a_redirect_is_never_followed_and_names_its_target() -> None:
    outcome, detail = verdict_of(301, b"", location="https://elsewhere.example/api")
    assert outcome is Outcome.MALFORMED
    assert detail.startswith("HTTP 301 redirect to https://elsewhere.example/api not followed")


def test_a_429_says_the_wait_it_asks_for_in_seconds_or_as_a_date() -> None:
    by_seconds = classify(429, {"retry-after": "7"}, b"", now=NOW)
    assert (by_seconds.outcome, by_seconds.retry_after) == (Outcome.RATE_LIMITED, 7.0)
    assert by_seconds.detail == "HTTP 429 rate limited, Retry-After 7s"
    date = format_datetime(NOW + timedelta(seconds=90), usegmt=True)
    by_date = classify(429, {"retry-after": date}, b"", now=NOW)
    assert by_date.retry_after == 90.0
    silent = classify(429, {}, b"", now=NOW)
    assert silent.retry_after is None and silent.detail == "HTTP 429 rate limited"
    huge = classify(429, {"retry-after": "99999999"}, b"", now=NOW)
    assert huge.detail.endswith("Retry-After over 100 days")


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        (None, None),
        ("0", 0.0),
        (" 12 ", 12.0),
        ("soon", None),
        ("-5", None),
        (format_datetime(NOW - timedelta(hours=1), usegmt=True), 0.0),  # past: no wait
        ("Sun, 06 Dec 2026 12:00:30", 30.0),  # no zone: GMT, as HTTP dates are
    ],
)
def test_retry_after_is_seconds_from_now_or_nothing(header: str | None, seconds: float) -> None:
    assert retry_after(header, NOW) == seconds


def test_the_token_is_scrubbed_before_a_text_is_cut() -> None:
    text = "x" * 190 + TOKEN
    assert TOKEN[:6] not in one_line(text, SCRUB)
    assert one_line("a\n  b\tc") == "a b c"
    assert one_line("y" * 300, limit=10) == "yyyyyyy..."
    assert TOKEN not in describe(f"<title>{TOKEN}</title>".encode(), SCRUB)


def test_an_ok_verdict_gives_its_reply_and_every_other_raises_its_error() -> None:
    ok = classify(200, {}, b'{"balance": "2.50"}', now=NOW)
    assert ok.raise_for("p") == {"balance": ok.reply["balance"]}  # type: ignore[index]
    with pytest.raises(TransientError) as caught:
        classify(502, {}, b"", now=NOW).raise_for("p")
    assert caught.value.maybe_processed and caught.value.provider == "p"
    with pytest.raises(RateLimitedError) as limited:
        classify(429, {"retry-after": "3"}, b"", now=NOW).raise_for("p")
    assert not limited.value.maybe_processed and limited.value.retry_after == 3.0


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.just(TOKEN),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["error", "errors", "order", "refill", "balance", TOKEN]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)
BODIES = (
    JSON.map(lambda v: json.dumps(v).encode())
    | st.binary(max_size=80)
    | st.sampled_from([MAINTENANCE, b"", b"  ", f"<title>{TOKEN}</title>".encode()])
)
HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "location": st.text(max_size=30) | st.just(f"https://x.example/?t={TOKEN}"),
        "retry-after": st.text(max_size=30) | st.integers(0, 10**9).map(str),
    },
)


@given(status=st.integers(100, 599), headers=HEADERS, body=BODIES)
def test_any_answer_has_exactly_one_outcome_and_raises_only_its_own_error(
    status: int, headers: dict[str, str], body: bytes
) -> None:
    verdict = classify(status, headers, body, now=NOW, scrub=SCRUB)  # never raises
    error = RAISES[verdict.outcome]
    assert TOKEN not in verdict.detail
    if error is None:
        assert status < 300 and verdict.detail == ""
        assert verdict.raise_for("p") is verdict.reply
        return
    assert verdict.reply is None and verdict.detail
    with pytest.raises(ProviderError) as caught:
        verdict.raise_for("p")
    assert type(caught.value) is error and caught.value.detail == verdict.detail


@given(
    status=st.integers(100, 599),
    held=st.sampled_from(["order", "refill"]),
    value=JSON,
    error=st.text(max_size=20).filter(str.strip),
)
def test_an_answer_naming_an_order_beside_an_error_is_never_a_refusal(
    status: int, held: str, value: object, error: str
) -> None:
    # The provider may hold that order or refill: whatever else the answer says, it is
    # no refusal (which would send an order again) and no success either.
    body = json.dumps({held: value, "error": error}).encode()
    outcome = classify(status, {}, body, now=NOW).outcome
    assert outcome not in (Outcome.REFUSED, Outcome.AUTH, Outcome.OK)
