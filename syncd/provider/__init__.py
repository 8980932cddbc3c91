"""The API v2 provider client: the only part of syncd that imports httpx.

::

    dialects.py   the field and action names of each dialect, as data
    client.py     ProviderClient: the actions, as typed calls built from the dialect
    transport.py  sends a call: HTTP, retries, the pace's turns, the provider's health
    verdicts.py   what an answer means (ok, refused, auth, ...): pure, no I/O
    replies.py    reads an OK reply into syncd's models: pure, no I/O
    pace.py       the provider's per-minute limit and the pauses its 429s ask for
    urls.py       which provider and webhook URLs are acceptable

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
