"""``Storage``: one object made of per-domain mixins; every method runs in one transaction
and every database failure surfaces as ``StorageError``."""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError

from syncd.errors import StorageError
from syncd.storage.alerts import AlertStorage
from syncd.storage.base import driver_reason
from syncd.storage.catalog import CatalogStorage
from syncd.storage.engine import make_engine, migrate, parsed_safe
from syncd.storage.feeds import FeedStorage
from syncd.storage.leases import LeaseStorage
from syncd.storage.order_reads import OrderReads
from syncd.storage.order_requests import RequestStorage
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
):
    """All of syncd's SQL, behind typed methods."""


def open_storage(url: str, *, busy_timeout: float = 5.0) -> Storage:
    """Connect, migrate the schema to the newest revision, and return the storage.

    A database another program holds locked is waited on like any write (the busy
    timeout, three times) before opening fails.
    """
    engine = make_engine(url, busy_timeout=busy_timeout)
    storage = Storage(engine)
    try:
        storage.retry_locked(lambda: migrate(engine))
    except (SQLAlchemyError, StorageError) as exc:
        engine.dispose()
        reason = driver_reason(exc) if isinstance(exc, SQLAlchemyError) else exc.detail
        raise StorageError(f"cannot open database {parsed_safe(url)}: {reason}") from None
    storage.watch_file()
    return storage
