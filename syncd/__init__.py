"""syncd: keeps a local database in step with SMM panel providers (API v2)."""

__version__ = "0.1.0"
