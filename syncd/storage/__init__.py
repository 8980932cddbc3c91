"""The storage layer: the only part of syncd that imports SQLAlchemy or SQLModel.

``Storage`` is one object made of per-domain mixins; every method runs in one transaction
and every database failure surfaces as ``StorageError``.
"""

from __future__ import annotations

from sqlalchemy.exc import SQLAlchemyError

from syncd.errors import StorageError
from syncd.storage.alerts import AlertStorage
from syncd.storage.base import driver_reason
from syncd.storage.catalog import CatalogStorage
from syncd.storage.engine import make_engine, migrate, parsed_safe
from syncd.storage.orders import OrderStorage
from syncd.storage.providers import ProviderStorage


class Storage(CatalogStorage, OrderStorage, ProviderStorage, AlertStorage):
    """All of syncd's SQL, behind typed methods."""


def open_storage(url: str, *, busy_timeout: float = 5.0) -> Storage:
    """Connect, migrate the schema to the newest revision, and return the storage."""
    engine = make_engine(url, busy_timeout=busy_timeout)
    try:
        migrate(engine)
    except SQLAlchemyError as exc:
        engine.dispose()
        reason = driver_reason(exc)
        raise StorageError(f"cannot open database {parsed_safe(url)}: {reason}") from None
    return Storage(engine)


__all__ = ["Storage", "open_storage"]
