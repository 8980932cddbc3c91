"""The storage layer: the only part of syncd that imports SQLAlchemy or SQLModel.

``Storage`` (``syncd.storage.store``) is imported on first use, like the provider client:
``syncd status`` reads through the database's driver alone (``syncd.storage.overview``),
and importing this package must not cost it SQLAlchemy, nearly half a second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from syncd.storage.leases import fenced
    from syncd.storage.store import Storage, open_storage

__all__ = ["Storage", "fenced", "open_storage"]


def __getattr__(name: str) -> Any:
    if name in ("Storage", "open_storage"):
        from syncd.storage import store  # noqa: PLC0415

        return getattr(store, name)
    if name == "fenced":
        from syncd.storage.leases import fenced  # noqa: PLC0415

        return fenced
    raise AttributeError(name)
