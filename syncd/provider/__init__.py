"""The API v2 provider client: the only part of syncd that imports httpx."""

from syncd.provider.client import ProviderClient
from syncd.provider.dialects import DIALECTS, Dialect

__all__ = ["DIALECTS", "Dialect", "ProviderClient"]
