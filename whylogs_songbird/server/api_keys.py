"""API keys made by ``songbird keys create``, kept in the store: a key is ``KEYID.SECRET:ORG-ID`` in
whylogs' format (a 10-character id, ``.``, the secret), and the store keeps the id, the org and the
SHA-256 of the secret only. The key is shown once, when it is made.

Keys given at start (``--api-key-file``, ``SONGBIRD_SERVER_API_KEYS``) stay in memory
(``auth.ApiKeyRing``); ``auth.require_key`` asks :func:`lookup_stored_key` when those do not know a key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass

from whylogs_songbird.server.store import Store

KEY_ID_LENGTH = 10
_KEY_ID_ALPHABET = string.ascii_letters + string.digits
_KEY = re.compile(r"(?P<id>[A-Za-z0-9]{10})\.(?P<secret>[A-Za-z0-9_-]{16,128})(?::(?P<org>[^:]{1,256}))?")
#: An organization id a key may belong to (as a dataset's org in a path).
ORG_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


@dataclass(frozen=True)
class NewKey:
    """A key just made: ``key`` is shown once and never kept."""

    key_id: str
    org_id: str
    key: str

    def __repr__(self) -> str:
        return f"NewKey(key_id={self.key_id!r}, org_id={self.org_id!r}, key=<hidden>)"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def create_key(store: Store, org_id: str) -> NewKey:
    """Make a key of ``org_id`` and keep its hash in ``store``; ValueError for a bad org."""
    if ORG_PATTERN.fullmatch(org_id) is None:
        raise ValueError(
            f"{org_id[:80]!r} is not an organization id: use 1 to 128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (for example org-acme)"
        )
    key_id = "".join(secrets.choice(_KEY_ID_ALPHABET) for _ in range(KEY_ID_LENGTH))
    secret = secrets.token_urlsafe(32)
    store.add_api_key(key_id, org_id, _digest(secret))
    return NewKey(key_id=key_id, org_id=org_id, key=f"{key_id}.{secret}:{org_id}")


def lookup_stored_key(store: Store, key: str) -> str | None:
    """The org of ``key`` if the store keeps it and it is not revoked, else None. The secret's hash
    is compared in constant time; a ``:ORG-ID`` suffix, when given, must name the key's org."""
    match = _KEY.fullmatch(key)
    if match is None:
        return None
    row = store.find_api_key(match["id"])
    if row is None:
        return None
    same = hmac.compare_digest(str(row["secret_sha256"]), _digest(match["secret"]))
    if not same or row["revoked_at"] is not None or (match["org"] is not None and match["org"] != row["org_id"]):
        return None
    return str(row["org_id"])


__all__ = ["NewKey", "create_key", "lookup_stored_key"]
