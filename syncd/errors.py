"""The one exception tree of syncd.

::

    SyncdError                      anything syncd expects and knows how to report
    ├── UserError                   a person must fix their input; one line, exit status 2
    │   ├── ConfigError             every problem of a config file at once, each with its key
    │   └── SchemaError             no schema, or not this syncd's: run ``syncd migrate``
    ├── JobError                    a job could not do its work; exit status 1, retried on schedule
    │   ├── ProviderError           talking to a provider failed
    │   │   ├── TransientError      may work later: network, timeout, 5xx (``retry_after``)
    │   │   │   └── RateLimitedError a 429 asked for a longer wait than the call allows
    │   │   ├── RefusedError        the provider answered with an error object
    │   │   ├── AuthError           the provider rejected the token: a person must act
    │   │   └── MalformedReplyError the reply is not what the API promises (HTML, broken JSON...)
    │   │       └── UnansweredError a status reply that answers none of the orders asked
    │   ├── SuspiciousCatalogError  the catalog safety valve refused a reply
    │   ├── SendPausedError         sending to a provider waits after an unknown outcome
    │   ├── SendInFlightError       another process's call to the provider is in flight
    │   ├── StorageError            the database failed (locked, unreachable, ...)
    │   │   └── PrivilegeError      the database role lacks a privilege a statement needs
    │   └── LeaseLostError          another instance took over the provider: stop its work
    └── DatabaseGoneError           the database file was deleted or replaced: the process stops

A job logs and records a ``JobError`` and goes on; a ``DatabaseGoneError`` stops the
whole process (exit status 1); any other exception is a bug and propagates.  Messages
never contain a token or secret: the provider client scrubs its own token out of
anything the provider echoes back, and the log pipeline redacts every configured secret
as a second line of defence.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime


class SyncdError(Exception):
    """Base of every error syncd knows how to report."""


class UserError(SyncdError):
    """Bad usage or bad input from a person. Shown as one line, no traceback, exit 2."""


@dataclass(frozen=True)
class ConfigProblem:
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


class ConfigError(UserError):
    """A config file with one or more problems; all of them are reported together."""

    def __init__(self, source: str, problems: Sequence[ConfigProblem]) -> None:
        self.source = source
        self.problems = list(problems)
        super().__init__(self._summary())

    def _summary(self) -> str:
        listed = "; ".join(str(p) for p in self.problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        return f"invalid config {self.source} ({count} {noun}): {listed}"


class JobError(SyncdError):
    """A job could not finish. The job is recorded as failed and retried on schedule.

    ``detail`` is the reason alone, for places that already name the provider.
    """

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        self.provider = provider
        self.detail = message
        super().__init__(f"provider {provider}: {message}" if provider else message)


class ProviderError(JobError):
    """Talking to a provider failed. ``provider`` names it in every message."""

    provider: str

    def __init__(self, provider: str, message: str) -> None:
        super().__init__(message, provider=provider)


class TransientError(ProviderError):
    """May succeed if tried again later.

    ``maybe_processed`` is false only when the request surely never reached the provider's
    application (connection refused, DNS failure, connect timeout, 429): an order
    submission that failed that way may be sent again.  ``retry_after`` carries the
    provider's ``Retry-After`` in seconds when it sent one.  ``answered`` is false when no
    answer came at all (no connection, a timeout, a connection broken before the reply):
    the provider said nothing, which neither ends nor extends a run of 429s.
    """

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        maybe_processed: bool,
        retry_after: float | None = None,
        answered: bool = True,
    ) -> None:
        super().__init__(provider, message)
        self.maybe_processed = maybe_processed
        self.retry_after = retry_after
        self.answered = answered


class RateLimitedError(TransientError):
    """The provider asks syncd to slow down (HTTP 429) for longer than a call may wait.
    Nothing was processed; the job defers its work to its next pass, and it is no
    failure of the job nor of the provider's health: the provider answered."""

    def __init__(self, provider: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(provider, message, maybe_processed=False, retry_after=retry_after)


class RefusedError(ProviderError):
    """The provider understood the request and answered with an error object."""


class AuthError(ProviderError):
    """The provider rejected the token. Retrying will not help; a person must act."""


class MalformedReplyError(ProviderError):
    """The reply is not what the API promises: HTML, broken JSON, wrong shape, too large."""


class UnansweredError(MalformedReplyError):
    """A multi-status reply that answers none of the orders asked: it names none of them
    (``{}``, ``{"errors": []}``), or says of every one of several that it is not found.
    That is the provider failing (a glitch, a database failover on its side), not a
    batch of orders gone: no order is blamed for it."""


class SuspiciousCatalogError(JobError):
    """The catalog safety valve refused a reply (``syncd sync catalog --force`` overrides)."""


class SendPausedError(JobError):
    """Sending to a provider is paused after a call whose outcome was unknown, or its
    trial could not be made (``syncd.send_pause``). ``resume_at``: when sending may be
    tried again (None: at once, once a harmless call succeeds)."""

    def __init__(self, message: str, *, resume_at: datetime | None = None) -> None:
        super().__init__(message)
        self.resume_at = resume_at


class SendInFlightError(JobError):
    """The submit job left orders queued because another process had a call that
    changes something at the provider in flight (one at a time per provider): no
    failure; the daemon runs the job again shortly."""


class StorageError(JobError):
    """The database failed: locked for too long, unreachable, or refused a statement."""


class PrivilegeError(StorageError):
    """The database refused a statement because the role syncd connects as lacks a
    privilege (``docs/roles.md`` says what each role is granted). Retrying will not help;
    a person must grant it or connect as another role."""


class SchemaError(UserError):
    """The database holds no syncd schema, or one at another revision than this syncd's,
    and the command may not (or the role cannot) migrate it: ``syncd migrate``, run as
    the role that owns the schema, does."""


class DatabaseGoneError(SyncdError):
    """The database file this process opened was deleted or replaced while it ran (an
    ``rm``, a restore moved over it). No job's failure: every write from now on would go
    into a file nobody reads, so the process stops (exit status 1; under systemd it is
    started again, on whatever file the path names by then)."""


class LeaseLostError(JobError):
    """The provider's lease is no longer this instance's (it expired, or another instance
    took it over): the write that found out wrote nothing, and the provider's work stops."""
