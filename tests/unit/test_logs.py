"""Log rendering and the redaction guarantee."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import quote, quote_plus

import pytest
import structlog

from syncd import logs
from syncd.errors import TransientError
from syncd.secret import Secret
from tests.leaks import ENCODED_TOKEN, leaked

SECRET = "tok-8d1e77"


@pytest.fixture(autouse=True)
def reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def test_json_lines_when_not_a_terminal() -> None:
    out = io.StringIO()
    logs.configure(fmt="auto", level="info", stream=out)
    structlog.get_logger("syncd.test").info(
        "job.finished", provider="p", job="catalog", status="ok"
    )
    line = json.loads(out.getvalue())
    assert line["event"] == "job.finished" and line["provider"] == "p" and line["level"] == "info"
    assert "timestamp" in line


def test_level_filters() -> None:
    out = io.StringIO()
    logs.configure(fmt="json", level="warning", stream=out)
    structlog.get_logger().info("quiet")
    structlog.get_logger().warning("loud")
    assert [json.loads(x)["event"] for x in out.getvalue().splitlines()] == ["loud"]


def test_every_field_is_redacted_whatever_its_type() -> None:
    out = io.StringIO()
    logs.configure(fmt="json", secrets=[Secret(SECRET)], stream=out)
    structlog.get_logger().error(
        f"event with {SECRET}",
        text=f"Bearer {SECRET}",
        nested={"a": [f"x{SECRET}y", 3]},
        error=TransientError("p", f"echoed {SECRET}", maybe_processed=True),
        number=5,
    )
    assert SECRET not in out.getvalue()
    line = json.loads(out.getvalue())
    assert (
        line["text"] == "Bearer ***"
        and line["nested"] == {"a": ["x***y", 3]}
        and line["number"] == 5
    )
    assert line["error"] == "provider p: echoed ***"


def test_console_format_renders_key_values() -> None:
    out = io.StringIO()
    logs.configure(fmt="console", secrets=[Secret(SECRET)], stream=out)
    structlog.get_logger().info("balance.synced", balance="1.00", token_echo=SECRET)
    text = out.getvalue()
    assert "balance.synced" in text and "balance=1.00" in text and SECRET not in text


def test_secret_is_hidden_in_repr_and_str() -> None:
    secret = Secret(SECRET)
    assert SECRET not in repr(secret) and SECRET not in str(secret) and SECRET not in f"{secret}"
    assert secret.reveal() == SECRET


def _post_with_a_token() -> None:
    data = {"api_token": SECRET * 10, "action": "balance"}  # a long token, as a local
    raise RuntimeError(f"boom with {len(data)} fields")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_a_logged_traceback_shows_no_locals_and_no_token(fmt: str) -> None:
    out = io.StringIO()
    logs.configure(fmt=fmt, secrets=[Secret(SECRET * 10)], stream=out)
    try:
        _post_with_a_token()
    except RuntimeError:
        structlog.get_logger().exception("job.crashed")
    text = out.getvalue()
    assert "boom with 2 fields" in text and "_post_with_a_token" in text
    assert SECRET[:8] not in text


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_every_spelling_and_piece_of_a_secret_is_redacted(fmt: str) -> None:
    out = io.StringIO()
    logs.configure(fmt=fmt, secrets=[Secret(ENCODED_TOKEN)], stream=out)
    structlog.get_logger().warning(
        "job.finished",
        error=f"token rejected: Invalid API key {ENCODED_TOKEN[:12]}...",
        form=f"api_token={quote_plus(ENCODED_TOKEN)}&action=balance",
        url=f"?key={quote(ENCODED_TOKEN, safe='').lower()}",
        echo=json.dumps({"api_token": ENCODED_TOKEN}),
        nested={"pieces": [ENCODED_TOKEN[5:13], ENCODED_TOKEN[-9:].upper()]},
    )
    text = out.getvalue()
    assert "job.finished" in text and "action=balance" in text
    assert leaked(text, ENCODED_TOKEN) == []


def _echo_the_token() -> None:
    raise RuntimeError(f"provider answered: {ENCODED_TOKEN}")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_an_exception_message_quoting_a_secret_is_redacted(fmt: str) -> None:
    out = io.StringIO()
    logs.configure(fmt=fmt, secrets=[Secret(ENCODED_TOKEN)], stream=out)
    try:
        _echo_the_token()
    except RuntimeError:
        structlog.get_logger().exception("job.crashed")
    text = out.getvalue()
    assert "provider answered: ***" in text and "_echo_the_token" in text
    assert leaked(text, ENCODED_TOKEN) == []


def _fail_with_escape_codes() -> None:
    raise RuntimeError("provider said \x1b[2J\x1b]0;pwned\x07")


def test_console_lines_escape_control_characters() -> None:
    out = io.StringIO()
    logs.configure(fmt="console", stream=out)
    log = structlog.get_logger()
    log.warning("catalog.refused\x1b[2J", currency="USD\x1b]0;pwned\x07", reason="a\u202eb c")
    try:
        _fail_with_escape_codes()
    except RuntimeError:
        log.exception("job.crashed")
    text = out.getvalue()
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "catalog.refused\\x1b[2J" in text and "currency=USD\\x1b]0;pwned\\x07" in text
    # The traceback keeps its lines; the message in it is escaped.
    assert "\nTraceback (most recent call last):\n" in text
    assert "RuntimeError: provider said \\x1b[2J\\x1b]0;pwned\\x07\n" in text


def test_json_lines_escape_control_characters_by_themselves() -> None:
    out = io.StringIO()
    logs.configure(fmt="json", stream=out)
    structlog.get_logger().warning("catalog.refused", currency="USD\x1b]0;pwned\x07\u202e")
    assert "\x1b" not in out.getvalue() and "\u202e" not in out.getvalue()
    assert json.loads(out.getvalue())["currency"] == "USD\x1b]0;pwned\x07\u202e"


@pytest.mark.parametrize("level", ["info", "debug"])
def test_a_run_skipped_because_the_last_one_still_goes_on_is_no_warning(level: str) -> None:
    """APScheduler itself skips the run and logs its warning; what reaches syncd's log is
    the daemon's own count, at debug level only."""
    from apscheduler.events import EVENT_JOB_MAX_INSTANCES  # noqa: PLC0415
    from apscheduler.schedulers.asyncio import AsyncIOScheduler  # noqa: PLC0415
    from apscheduler.triggers.interval import IntervalTrigger  # noqa: PLC0415

    from syncd.daemon.service import SkippedRuns  # noqa: PLC0415

    stream = io.StringIO()
    logs.configure(fmt="json", level=level, stream=stream)

    async def main() -> None:
        scheduler = AsyncIOScheduler(timezone=UTC)
        skipped = SkippedRuns()
        scheduler.add_listener(skipped, EVENT_JOB_MAX_INSTANCES)
        running, release, noticed = asyncio.Event(), asyncio.Event(), asyncio.Event()
        scheduler.add_listener(lambda _event: noticed.set(), EVENT_JOB_MAX_INSTANCES)

        async def sweep() -> None:
            running.set()
            await release.wait()

        job = scheduler.add_job(
            sweep, IntervalTrigger(hours=1), id="sim:orders", next_run_time=datetime.now(UTC),
            coalesce=True, max_instances=1, misfire_grace_time=None,
        )  # fmt: skip
        scheduler.start()
        await running.wait()
        for _ in range(2):  # due again, twice, while the first run goes on
            noticed.clear()
            job.modify(next_run_time=datetime.now(UTC))
            await noticed.wait()
        release.set()
        scheduler.shutdown(wait=False)
        assert skipped.counts == {"sim:orders": 2}

    asyncio.run(main())
    text = stream.getvalue()
    assert "maximum number of running instances" not in text
    lines = [json.loads(line) for line in text.splitlines()]
    shown = [(e["event"], e["scheduled"], e["skipped"]) for e in lines if "scheduled" in e]
    if level == "debug":
        assert shown == [("job.run_skipped", "sim:orders", 1), ("job.run_skipped", "sim:orders", 2)]
    else:
        assert shown == []


def test_other_scheduler_warnings_still_reach_the_log() -> None:
    stream = io.StringIO()
    logs.configure(fmt="json", stream=stream)
    logging.getLogger("apscheduler.scheduler").warning('Run time of job "%s" was missed', "x")
    assert json.loads(stream.getvalue())["event"] == 'Run time of job "x" was missed'
