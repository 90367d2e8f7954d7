"""Which Cloud API base URLs an account may name. Pure.

An account's `apiUrl` is where the daemon sends its requests, with the account's
token; a tenant must not be able to point it at an address inside the network
(a metadata service, the database). So it must start with one of the operator's
prefixes (`whatsapp.allowed_api_urls`, else `whatsapp.api_url`), and name the
same host as that prefix: `http://127.0.0.1:80@evil.example/` starts with
`http://127.0.0.1:` but is a request to evil.example.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit


def api_url_allowed(url: str, prefixes: Iterable[str]) -> bool:
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    if "@" in parts.netloc or "\\" in url:
        return False  # userinfo, or a backslash some parsers read as a slash
    for prefix in prefixes:
        if url.startswith(prefix) and _host(prefix) == parts.hostname:
            return True
    return False


def _host(prefix: str) -> str | None:
    try:
        return urlsplit(prefix).hostname
    except ValueError:
        return None
