"""``Storage``: one object made of per-domain mixins, and how to open it.

The contract every job and every mixin follows is written once, on ``Storage`` below."""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError

from syncd.errors import PrivilegeError, SchemaError, StorageError
from syncd.secret import Scrubber, Secret
from syncd.storage import engine as engines
from syncd.storage.alerts import AlertStorage
from syncd.storage.base import driver_reason
from syncd.storage.catalog import CatalogStorage
from syncd.storage.engine import make_engine, missing_sqlite_file, parsed_safe
from syncd.storage.feeds import FeedStorage
from syncd.storage.leases import LeaseStorage
from syncd.storage.ledger_reads import LedgerReads
from syncd.storage.migrations import HEAD
from syncd.storage.order_reads import OrderReads
from syncd.storage.order_requests import RequestStorage
from syncd.storage.pacing import PaceStorage
from syncd.storage.providers import ProviderStorage
from syncd.storage.submission import SubmissionStorage
from syncd.storage.sweep import SweepStorage


class Storage(
    CatalogStorage,
    SubmissionStorage,
    SweepStorage,
    OrderReads,
    RequestStorage,
    ProviderStorage,
    LeaseStorage,
    AlertStorage,
    FeedStorage,
    LedgerReads,
    PaceStorage,
):
    """All of syncd's SQL, behind typed methods.

    **The shape of a job.** Every job fetches, decides, and writes, in that order::

        fetched = ctx.client.read_catalog(await ctx.client.catalog_reply()).packages  # fetch
        decide = lambda stored: plan_catalog(name, stored, fetched, now)  # pure
        plan = await ctx.db(ctx.storage.apply_catalog_reply, name, decide)  # one transaction

    ``decide(rows, now) -> Plan`` is the job's planner: a pure function that touches no
    database, network or clock (the job binds ``now`` and what it fetched, or storage
    hands on the ``now`` it was given). The storage call opens one write transaction,
    reads the rows the decision is about (locked, where the engine locks rows), hands
    them to the planner, writes the plan it returns (the rows, then the change-feed
    rows, then the alerts) and commits. So a decision is always made against the rows
    it changes, however many processes share the database, and storage itself decides
    nothing: the rules live in ``syncd.lifecycle``, ``syncd.order_requests`` and the
    jobs' planners, and storage imports none of their functions (a test checks it).

    **Names.**

    - ``apply_<thing>(..., plan)``: a write that hands the rows it read to a planner
      (``apply_catalog_reply``, ``apply_balance``, ``apply_health``,
      ``apply_status_answers``, ``apply_refill_statuses``, ``apply_stray_orders``,
      ``apply_stray_requests``).
    - ``claim_`` / ``finish_`` / ``recover_``: the exactly-once protocol of sending an
      order or a refill/cancel request, planners too. A claim commits ``submitting``
      under its sender before anything is sent; a finish records the answer if the row
      is still the sender's; a recover settles the rows whose sender died. Webhook
      deliveries are claimed the same way (``claim_delivery``), and leases keep their
      own verbs (``acquire_``, ``renew_``, ``release_lease``).
    - ``record_<thing>``: a fact written as the caller states it, with no decision to
      make (``record_delivery``, ``record_job_start``, ``record_orders_synced``).
    - A command's own writes are named for the command: ``queue_order``,
      ``track_orders``, ``queue_requests``, ``settle_order``, ``register_providers``.
    - Reads are nouns, named for what they return: ``due_orders``, ``balance_history``,
      ``catalog``, ``order``, ``orders``, ``overview``, ``ledger_window``. ``count_due``
      alone counts and writes: it first makes due the rows whose schedule a clock or a
      hand broke.

    A "request" here is always a refill or a cancellation (the ``order_requests``
    table); an HTTP exchange with a provider is a *call*, and storage makes none.
    Every method runs in one transaction, and every database failure surfaces as
    ``StorageError``.
    """


def open_storage(url: str, *, migrate: bool = True, busy_timeout: float = 5.0) -> Storage:
    """Connect and return the storage, its schema at this syncd's revision.

    With ``migrate`` (``syncd run``, the demo, the commands that write), a schema that is
    missing or behind is brought to the newest revision first, when the role may; a role
    that may not (the database's owner migrates, see ``docs/roles.md``) still opens a
    schema already up to date, and is told in one line to run ``syncd migrate`` as the
    owning role otherwise. Without ``migrate`` (the commands that only read), nothing is
    created or changed, not even an empty SQLite file: a schema that is missing or
    behind is ``SchemaError``, and a role that may only SELECT opens it.

    A database another program holds locked is waited on like any write (the busy
    timeout, three times) before opening fails.
    """
    if not migrate and (missing := missing_sqlite_file(url)) is not None:
        # A path with a typo must not become an empty database.
        raise SchemaError(
            f"no database at {missing}: check database.url, or create it with syncd migrate"
        )
    engine = make_engine(url, busy_timeout=busy_timeout)
    storage = Storage(engine)
    try:
        storage.retry_locked(lambda: _bring_up(storage, migrate=migrate))
    except (SchemaError, PrivilegeError):
        engine.dispose()
        raise  # one line of their own, naming what to do
    except TypeError as exc:  # a MySQL driver's answer to a query parameter it does not take
        engine.dispose()
        raise StorageError(f"cannot open database {parsed_safe(url)}: {exc}") from None
    except (SQLAlchemyError, StorageError) as exc:
        engine.dispose()
        reason = driver_reason(exc) if isinstance(exc, SQLAlchemyError) else exc.detail
        if engine.url.password:
            # The driver's words are its own: one that quotes what it was given (libpq's
            # "forbidden value ... in percent-encoded value") must not show the password.
            reason = Scrubber([Secret(str(engine.url.password))]).scrub(reason)
        raise StorageError(f"cannot open database {parsed_safe(url)}: {reason}") from None
    storage.watch_file()
    return storage


def _bring_up(storage: Storage, *, migrate: bool) -> None:
    """Check the schema, or migrate it; a migration the role may not make is a
    ``SchemaError`` saying who may (a read the role may not make stays a
    ``PrivilegeError``)."""
    engine = storage.engine
    if not migrate:
        engines.check_schema(engine)
        return
    found = engines.current_revision(engine)
    if found == HEAD:
        return
    try:
        engines.migrate(engine)
    except SQLAlchemyError as exc:
        if not storage.backend.is_permission_error(getattr(exc, "orig", None)):
            raise
        role = storage.backend.role(engine.url)
        raise SchemaError(
            engines.behind(engine, found, f", and role {role} may not migrate it")
        ) from None


def migrate_database(url: str, *, busy_timeout: float = 5.0) -> tuple[str | None, str]:
    """``syncd migrate``: bring the schema to the newest revision; returns the revision
    found (None: there was no schema) and the one it is at now. Nothing else is written:
    providers are registered by the commands that work for them."""
    engine = make_engine(url, busy_timeout=busy_timeout)
    storage = Storage(engine)
    try:
        found = storage.retry_locked(lambda: engines.migrate(engine))
    except (SchemaError, PrivilegeError):
        raise
    except TypeError as exc:  # as in open_storage
        raise StorageError(f"cannot migrate database {parsed_safe(url)}: {exc}") from None
    except (SQLAlchemyError, StorageError) as exc:
        reason = driver_reason(exc) if isinstance(exc, SQLAlchemyError) else exc.detail
        raise StorageError(f"cannot migrate database {parsed_safe(url)}: {reason}") from None
    finally:
        engine.dispose()
    return found, HEAD
