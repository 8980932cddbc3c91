"""The API v2 provider client: the only part of syncd that imports httpx.

``ProviderClient`` is imported on first use, so that reading the dialects (the config
does, for every command) does not import httpx for commands that never call out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from syncd.provider.dialects import DIALECTS, Dialect

if TYPE_CHECKING:
    from syncd.provider.client import ProviderClient

__all__ = ["DIALECTS", "Dialect", "ProviderClient"]


def __getattr__(name: str) -> Any:
    if name == "ProviderClient":
        from syncd.provider.client import ProviderClient  # noqa: PLC0415

        return ProviderClient
    raise AttributeError(name)
