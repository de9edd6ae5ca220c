"""API keys of the server: kept only as SHA-256 hashes, compared in constant time.

:func:`require_key` is the dependency of the operations that need a key (get_session, claim).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Header, Request

from whylogs_songbird.models import API_KEY_HEADER
from whylogs_songbird.server.api_keys import lookup_stored_key
from whylogs_songbird.server.errors import ApiError


@dataclass(frozen=True)
class KeyOwner:
    """Who an accepted API key belongs to: ``org_id`` None means any org."""

    org_id: str | None


class ApiKeyRing:
    """The accepted API keys, kept only as SHA-256 hashes and compared in constant time.

    A key ``<id>.<secret>:<org-id>`` belongs to that org and is accepted with or without its
    ``:<org-id>`` suffix; a key without the suffix belongs to no org (it may claim into any).
    """

    def __init__(self, keys: Iterable[str]) -> None:
        self._hashes: list[tuple[bytes, KeyOwner]] = []
        for key in keys:
            secret, sep, org = key.rpartition(":") if ":" in key else (key, "", "")
            owner = KeyOwner(org_id=org or None)
            self._hashes.append((self._digest(key), owner))
            if sep:
                self._hashes.append((self._digest(secret), owner))

    def __repr__(self) -> str:
        return f"ApiKeyRing(<{len(self._hashes)} hashes>)"

    def __len__(self) -> int:
        return len(self._hashes)

    @staticmethod
    def _digest(key: str) -> bytes:
        return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()

    def lookup(self, key: str | None) -> KeyOwner | None:
        """The owner of ``key``, or None when it is missing or not accepted."""
        if not key:
            return None
        digest = self._digest(key)
        found: KeyOwner | None = None
        for candidate, owner in self._hashes:  # no early exit: same work for every key
            if hmac.compare_digest(candidate, digest) and found is None:
                found = owner
        return found


def require_key(request: Request, x_api_key: Annotated[str | None, Header(alias=API_KEY_HEADER)] = None) -> KeyOwner:
    """Dependency: the owner of the request's ``X-API-Key``, or a 401 that says what to send."""
    keys: ApiKeyRing = request.app.state.api_keys
    if not x_api_key:
        raise ApiError(401, "This operation needs an API key; send it in the X-API-Key header.")
    owner = keys.lookup(x_api_key)
    if owner is None:  # keys made by `songbird keys create`, kept in the store
        stored_org = lookup_stored_key(request.app.state.store, x_api_key)
        owner = KeyOwner(org_id=stored_org) if stored_org is not None else None
    if owner is None:
        hint = (
            ""
            if len(keys)
            else " This server was started with no API keys: give it --api-key-file or SONGBIRD_SERVER_API_KEYS,"
            " or make a key with songbird keys create."
        )
        raise ApiError(401, "The API key in X-API-Key is not accepted by this server; check the key." + hint)
    return owner


__all__ = ["ApiKeyRing", "KeyOwner", "require_key"]
