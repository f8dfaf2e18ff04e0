"""Recognise and mask secret-shaped names and values, for config dumps, logs and errors."""

from __future__ import annotations

import re
from functools import lru_cache

# Words that mark a name as holding a credential, matched against the name's `_`/`-`/`.` separated parts,
# so `ADMIN_API_KEY` and `authorization` are secret while `prompt_tokens` and `keyspace` are not.
_SECRET_WORDS = frozenset(
    {
        "key",
        "apikey",
        "token",
        "secret",
        "password",
        "passwd",
        "authorization",
        "auth",
        "credential",
        "credentials",
        "cookie",
        "dsn",
        "bearer",
    }
)
# Names that hold what identifies an API key without revealing it: the gateway's log fields for spend by key.
_PUBLIC_NAMES = frozenset({"key_alias", "key_id"})
_NAME_PARTS = re.compile(r"[^a-z0-9]+")
# Credentials embedded in URLs: scheme://user:password@host, or scheme://:password@host (Redis)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s:]*:[^/@\s]+@", re.IGNORECASE)
MASK = "***"


@lru_cache(maxsize=1024)
def is_secret_name(name: str) -> bool:
    """True when a variable or field name says it holds a credential."""
    lowered = name.lower()
    return lowered not in _PUBLIC_NAMES and any(part in _SECRET_WORDS for part in _NAME_PARTS.split(lowered))


def mask(name: str, value: object) -> object:
    """Mask `value` when `name` is secret-shaped; strip credentials from URLs in any value."""
    if value is None or value == "":
        return value
    if is_secret_name(name):
        return MASK
    if isinstance(value, str):
        return _URL_CREDENTIALS.sub(rf"\g<scheme>{MASK}@", value)
    return value
