"""structlog set-up: console lines on a terminal, JSON lines otherwise, secrets redacted.

Every log line passes ``Redactor`` last before rendering, which replaces any piece of any
spelling of a configured token or secret found in any field with ``***`` (see
``syncd.secret``): a second line of defence behind the code that never puts them into
messages in the first place. On a terminal, ``printable_fields`` then escapes every control
character a provider's text may carry (JSON lines escape them by themselves).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO, cast

import stamina.instrumentation
import structlog

from syncd.display import printable
from syncd.errors import ProviderError
from syncd.secret import Scrubber, Secret

log = structlog.get_logger("syncd")


class Redactor:
    """A structlog processor that scrubs secret values from every field of an event."""

    def __init__(self, secrets: Iterable[Secret]) -> None:
        self._scrubber = Scrubber(secrets)

    def __call__(
        self, _logger: Any, _name: str, event: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        if self._scrubber:
            for key, value in event.items():
                event[key] = self._scrub(value)
        return event

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._scrubber.scrub(value)
        if isinstance(value, dict):
            return {k: self._scrub(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._scrub(v) for v in value]
        if isinstance(value, (int, float, bool)) or value is None:
            return value
        text = str(value)
        scrubbed = self._scrub(text)
        return value if scrubbed == text else scrubbed


# Fields the console renderer prints on lines of their own (a traceback, a stack).
_MULTILINE = frozenset({"exception", "stack"})


def printable_fields(
    _logger: Any, _name: str, event: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """A structlog processor for console lines: no string field may drive the terminal.

    Other values are rendered with ``repr``, which escapes control characters already.
    """
    for key, value in event.items():
        if isinstance(value, str):
            lines = value.split("\n") if key in _MULTILINE else [value]
            event[key] = "\n".join(printable(line) for line in lines)
    return event


def configure(
    *,
    fmt: str = "auto",
    level: str = "info",
    secrets: Iterable[Secret] = (),
    stream: TextIO | None = None,
) -> None:
    """Configure structlog for the whole process (idempotent; SIGHUP may call it again)."""
    out = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and out.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=out.isatty())
        if console
        else structlog.processors.JSONRenderer()
    )
    # A traceback becomes text (or a dict) before the Redactor, never while rendering after
    # it: the exception's message may quote a token. Tracebacks never show local variables:
    # a frame of the provider client holds the token, and a value cut short for display
    # would slip past the redaction.
    tracebacks = (
        structlog.processors.format_exc_info
        if console
        else structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        )
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            tracebacks,
            Redactor(secrets),
            *([printable_fields] if console else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # PrintLogger only writes and flushes: the two methods _Unfailing has.
        logger_factory=structlog.PrintLoggerFactory(file=cast(TextIO, _Unfailing(out))),
        cache_logger_on_first_use=False,
    )
    stamina.instrumentation.set_on_retry_hooks([_on_retry])
    # Libraries log through the standard library: their warnings go through the same
    # pipeline, redaction included.
    root = logging.getLogger()
    root.handlers = [_ToStructlog()]
    root.setLevel(logging.WARNING)
    scheduler = logging.getLogger("apscheduler.scheduler")
    if not any(isinstance(f, _NoOverlapWarning) for f in scheduler.filters):
        scheduler.addFilter(_NoOverlapWarning())


class _NoOverlapWarning(logging.Filter):
    """Keeps out APScheduler's warning that a run was skipped because the job's previous
    run still goes on ("maximum number of running instances reached"). A job never
    overlapping itself is the rule (``max_instances=1``), not a fault: a sweep longer
    than its interval skips its next turn by design. The daemon counts those skips
    itself and logs them at debug level (``job.run_skipped``); APScheduler's other
    warnings come through."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in str(record.msg)


class _Unfailing:
    """The log stream, for a process that must go on when its log cannot be written (a
    full disk under stderr, a reader of ``syncd run 2>&1 | ...`` gone, journald away):
    a line that cannot be written is dropped, the orders are not."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return self._stream.write(text)
        except (OSError, ValueError):  # ValueError: the stream was closed
            return 0

    def flush(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._stream.flush()

    def isatty(self) -> bool:
        return self._stream.isatty()


class _ToStructlog(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        fields: dict[str, Any] = {"logger": record.name}
        if record.exc_info:
            fields["exc_info"] = record.exc_info
        structlog.get_logger(record.name).log(record.levelno, record.getMessage(), **fields)


def silence() -> None:
    """Only errors: one-shot commands print their own results."""
    configure(level="critical")


def _on_retry(details: stamina.instrumentation.RetryDetails) -> None:
    error = details.caused_by
    fields: dict[str, Any] = {}
    if isinstance(error, ProviderError):
        fields["provider"] = error.provider
    log.info(
        "retry.scheduled",
        attempt=details.retry_num,
        wait=round(details.wait_for, 2),
        error=str(error) or type(error).__name__,
        **fields,
    )
