"""Which provider URLs syncd agrees to send a token to."""

from __future__ import annotations

import ipaddress
from urllib.parse import parse_qsl, urlsplit


def is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def webhook_url_problem(url: str) -> str | None:
    """Why alerts cannot be POSTed to ``url``, or ``None``. Plain http is fine: no token
    travels to a webhook, and a signed body cannot be forged on the way."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 (reading it validates it: a non-numeric port raises)
    except ValueError as exc:
        return f"not a URL: {exc}"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    return None


# Query parameters that carry a provider's key, whatever the dialect calls it.
_KEY_NAMES = frozenset({"key", "api_key", "apikey", "api_token", "token", "access_token"})


def provider_url_problem(url: str) -> str | None:
    """Why ``url`` may not carry a token, or ``None`` when it may.

    The token travels in the request body, so plain ``http://`` would expose it to anyone on
    the path; it is allowed only on loopback (a local simulator or tunnel).
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 (reading it validates it: a non-numeric port raises)
    except ValueError as exc:
        return f"not a URL: {exc}"
    if parts.scheme not in ("https", "http") or not host:
        return "must be an https:// URL with a host"
    if parts.username or parts.password:
        return "must not carry credentials; use token, token_file or token_env"
    if {name.lower() for name, _ in parse_qsl(parts.query, keep_blank_values=True)} & _KEY_NAMES:
        # The URL is shown (syncd status, logs); the token must never be.
        return "must not carry the token in its query; use token, token_file or token_env"
    if parts.scheme == "http" and not is_loopback(host):
        return "plain http:// is refused except on loopback (the token would travel in clear)"
    return None
