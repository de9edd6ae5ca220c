"""Presigned upload URLs: ``<base>/v0/uploads/{id}?expires=<unix s>&signature=<hex HMAC-SHA256>``.

The HMAC key is a per-server secret of 32 random bytes kept in ``<data_dir>/secret.key``, so
URLs handed out before a restart still verify after it. The token that opens the details of
``/healthz`` is kept the same way, in ``<data_dir>/health.token``.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

from whylogs_songbird.models import HEALTH_TOKEN_FILE

SECRET_FILE = "secret.key"  # noqa: S105 - a file name, not a secret
SECRET_BYTES = 32


class SignatureError(Exception):
    """The upload URL's signature is missing or does not match (or its expiry was tampered with)."""


class UrlExpiredError(SignatureError):
    """The upload URL is correctly signed but its expiry time has passed."""


def _create_private_file(path: Path, content: bytes) -> None:
    """Write ``content`` to ``path`` (mode 0600) unless it exists. Atomic: written to a private
    temporary file and hard-linked into place, so concurrent starts agree on one content and
    nobody ever reads a half-written file."""
    if path.exists():
        return
    tmp = path.parent / f".{path.name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # another process won the race: use its file
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_or_create_secret(data_dir: Path) -> bytes:
    """Read the server secret from ``data_dir/secret.key``, creating it (mode 0600) on first start."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / SECRET_FILE
    _create_private_file(path, secrets.token_bytes(SECRET_BYTES))
    secret = path.read_bytes()
    if len(secret) != SECRET_BYTES:
        raise ValueError(
            f"{path} does not hold a {SECRET_BYTES}-byte secret; delete it to make a new one "
            "(upload URLs handed out before then stop working)."
        )
    return secret


def load_or_create_health_token(data_dir: Path) -> str:
    """The token of ``data_dir/health.token`` (64 hex digits, mode 0600), made on first start: sent
    in ``X-Songbird-Health-Token``, it opens the details of ``/healthz`` to whoever can read the file."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / HEALTH_TOKEN_FILE
    _create_private_file(path, (secrets.token_hex(SECRET_BYTES) + "\n").encode())
    token = path.read_text(encoding="ascii", errors="replace").strip()
    if len(token) != 2 * SECRET_BYTES:
        raise ValueError(f"{path} does not hold a health token; delete it to make a new one.")
    return token


class UrlSigner:
    """Signs and verifies upload URLs with HMAC-SHA256 over ``f"{upload_id}:{expires}"``."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret

    def __repr__(self) -> str:
        return "UrlSigner(<secret>)"

    def signature(self, upload_id: str, expires: int) -> str:
        """The hex signature of one upload id and expiry (unix seconds)."""
        message = f"{upload_id}:{expires}".encode()
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    def upload_url(self, base_url: str, upload_id: str, expires: int) -> str:
        """The presigned PUT URL of an upload."""
        signature = self.signature(upload_id, expires)  # a hex digest, and expires a number: nothing to escape
        return f"{base_url.rstrip('/')}/v0/uploads/{upload_id}?expires={expires}&signature={signature}"

    def verify(self, upload_id: str, expires: str | None, signature: str | None, now: float | None = None) -> int:
        """Check a URL's ``expires`` and ``signature`` query values; return the expiry.

        Raises :class:`SignatureError` when either is missing or wrong, and
        :class:`UrlExpiredError` when the signature is good but the URL has expired.
        """
        if not expires or not signature:
            raise SignatureError(
                "The upload URL has no expires/signature; use the uploadUrl exactly as the server gave it."
            )
        if not expires.isascii() or not expires.isdigit() or len(expires) > 12:
            raise SignatureError("The upload URL's signature does not match; use the uploadUrl exactly as given.")
        expected = self.signature(upload_id, int(expires))
        if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
            raise SignatureError("The upload URL's signature does not match; use the uploadUrl exactly as given.")
        expiry = int(expires)
        if (time.time() if now is None else now) > expiry:
            raise UrlExpiredError(
                "This upload URL has expired; ask the server for a new one "
                "(call the upload or reference operation again) and PUT the profile to that URL."
            )
        return expiry
