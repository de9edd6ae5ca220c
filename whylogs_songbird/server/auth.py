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
        self._refs = {self._ref(digest): owner for digest, owner in self._hashes}

    def __repr__(self) -> str:
        return f"ApiKeyRing(<{len(self._hashes)} hashes>)"

    def __len__(self) -> int:
        return len(self._hashes)

    @staticmethod
    def _digest(key: str) -> bytes:
        return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()

    @staticmethod
    def _ref(digest: bytes) -> str:
        return "r:" + hashlib.sha256(b"songbird-key-ref:" + digest).hexdigest()[:32]

    def ref(self, key: str) -> str:
        """A reference to a key that is no secret (a hash of its hash), for a cookie to name the
        key it was made with (:meth:`owner_of_ref` finds it while this ring accepts the key)."""
        return self._ref(self._digest(key))

    def owner_of_ref(self, ref: str) -> KeyOwner | None:
        """The owner of the key a :meth:`ref` names, while this ring still holds it."""
        return self._refs.get(ref)

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


def key_owner(request: Request, key: str) -> tuple[KeyOwner, str] | None:
    """The owner of ``key`` and a reference to it that holds no secret (``r:…`` for a key given at
    start, ``k:<key id>`` for one kept in the store), or None when the server does not accept it."""
    keys: ApiKeyRing = request.app.state.api_keys
    owner = keys.lookup(key)
    if owner is not None:
        return owner, keys.ref(key)
    stored_org = lookup_stored_key(request.app.state.store, key)
    if stored_org is None:
        return None
    return KeyOwner(org_id=stored_org), "k:" + key.partition(".")[0]


def key_ref_owner(request: Request, ref: str) -> KeyOwner | None:
    """The owner of the key :func:`key_owner` referred to as ``ref``, while the server still accepts
    it (a key revoked since, or no longer given at start, answers None)."""
    if ref.startswith("r:"):
        keys: ApiKeyRing = request.app.state.api_keys
        return keys.owner_of_ref(ref)
    if ref.startswith("k:"):
        row = request.app.state.store.metadata.find_api_key(ref[2:])
        if row is not None and row["revoked_at"] is None:
            return KeyOwner(org_id=str(row["org_id"]))
    return None


def require_key(request: Request, x_api_key: Annotated[str | None, Header(alias=API_KEY_HEADER)] = None) -> KeyOwner:
    """Dependency: the owner of the request's ``X-API-Key``, or a 401 that says what to send."""
    keys: ApiKeyRing = request.app.state.api_keys
    if not x_api_key:
        raise ApiError(401, "This operation needs an API key; send it in the X-API-Key header.")
    found = key_owner(request, x_api_key)  # given at start, or made by `songbird keys create`
    if found is None:
        hint = (
            ""
            if len(keys)
            else " This server was started with no API keys: give it --api-key-file or SONGBIRD_SERVER_API_KEYS,"
            " or make a key with songbird keys create."
        )
        raise ApiError(401, "The API key in X-API-Key is not accepted by this server; check the key." + hint)
    return found[0]


__all__ = ["ApiKeyRing", "KeyOwner", "key_owner", "key_ref_owner", "require_key"]
