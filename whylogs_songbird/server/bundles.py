"""Session bundles: a session's profiles in one portable zip, written and read in bounded memory.

A bundle is a zip holding ``profiles/<n>.bin`` (each profile's bytes exactly as they are stored:
as whylogs serialized them) and ``manifest.json``, written last::

    {"format": "songbird-bundle", "version": 1, "exported_at": <epoch ms>,
     "session": {"id": "session-…", "created_at": <epoch ms>},
     "profiles": [{"file": "profiles/000001.bin", "id": "log-…", "kind": "batch" | "reference",
                   "dataset_timestamp": <epoch ms or null>, "alias": <str or null>,
                   "segment_tags": [{"key": …, "value": …}], "uploaded_at": <epoch ms>,
                   "size": <bytes>, "sha256": <hex>}]}

:func:`export_chunks` streams a bundle: the zip is written to a sink that the response drains
after each piece, so memory holds one read buffer, never a profile or the bundle. Profiles marked
invalid are left out (their bytes were refused or cannot be read); duplicates have no bytes of
their own and are left out too (the original is exported).

:func:`import_bundle` reads a bundle from a file (the route spools the request body to disk
first): it checks everything before it creates anything — the manifest's shape and version, that
every named file is there with the size and sha256 the manifest gives (the zip's CRC too), and
that every profile passes the server's cheap structural check (``profile_check.py``; the bytes are
never deserialized here). Each profile is extracted to a temporary file while it is checked, so
memory does not grow with the bundle or a profile. Only then are the session and its profiles
created; if storing fails midway, the new session is deleted, so nothing half-imported stays.

The manifest lists profiles in the order they landed, and an import records them as landed in
that order, each at least a millisecond after the one before: which reference is the newest (the
one a session compares with unless told otherwise) is the same after a move. Upload times
themselves start again at the import (retention counts from then).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import mmap
import os
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from whylogs_songbird.server import lifecycle
from whylogs_songbird.server.profile_check import ProfileCheckError, check_profile_bytes
from whylogs_songbird.server.store import Store, UploadRecord, now_ms

logger = logging.getLogger("whylogs_songbird.server.bundles")

FORMAT = "songbird-bundle"
VERSION = 1
MANIFEST = "manifest.json"
#: The route that imports a bundle (its body limit is :data:`MAX_BUNDLE_BYTES`, see middleware.py).
IMPORT_PATH = "/api/v1/import"
#: A manifest larger than this is refused (about 100,000 profiles fit).
MAX_MANIFEST_BYTES = 64 * 1024 * 1024
#: The largest bundle the import route takes (it is spooled to disk, never held in memory).
MAX_BUNDLE_BYTES = 64 * 1024**3
#: Profiles per bundle at most.
MAX_PROFILES = 100_000
_CHUNK = 1024 * 1024
_HEX64 = re.compile(r"[0-9a-f]{64}")
_FILE = re.compile(r"profiles/[0-9]{6,9}\.bin")


class BundleError(ValueError):
    """A bundle that cannot be imported; the message says why and what to do."""


# -- export -----------------------------------------------------------------------------------


class _Sink(io.RawIOBase):
    """A write-only, non-seekable stream whose bytes are taken out with :meth:`drain`."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        self._parts.append(chunk)
        return len(chunk)

    def drain(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def exportable(store: Store, session_id: str) -> list[UploadRecord]:
    """The profiles of a session a bundle holds: stored with bytes, not invalid, in the order they
    landed (the order that names a session's newest reference; an import keeps it)."""
    profiles = [p for p in store.list_profiles(session_id) if p.path is not None and not p.invalid]
    return sorted(profiles, key=lambda p: (p.stored_at or 0, p.id))


def export_chunks(store: Store, session_id: str, profiles: list[UploadRecord]) -> Iterator[bytes]:
    """The bytes of the bundle of ``profiles`` (see the module docstring), piece by piece.

    Raises OSError midway when a profile's bytes are gone or are not the recorded ones (the
    response is then cut short, and a cut bundle is refused by :func:`import_bundle`)."""
    session = store.get_session(session_id)
    sink = _Sink()
    entries: list[dict[str, Any]] = []
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for n, profile in enumerate(profiles, start=1):
            name = f"profiles/{n:06d}.bin"
            digest, size = hashlib.sha256(), 0
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            with store.open_profile(profile) as source, archive.open(info, "w", force_zip64=True) as target:
                while chunk := source.read(_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    target.write(chunk)
                    yield sink.drain()
            sha256 = digest.hexdigest()
            if profile.sha256 != sha256 or profile.size != size:
                raise OSError(f"the stored bytes of upload {profile.id} are not the recorded ones; export stopped")
            entries.append(
                {
                    "file": name,
                    "id": profile.id,
                    "kind": profile.kind,
                    "dataset_timestamp": profile.dataset_timestamp,
                    "alias": profile.alias,
                    "segment_tags": [{"key": k, "value": v} for k, v in profile.segment_tags],
                    "uploaded_at": profile.stored_at or profile.created_at,
                    "size": size,
                    "sha256": sha256,
                }
            )
        manifest = {
            "format": FORMAT,
            "version": VERSION,
            "exported_at": now_ms(),
            "session": {"id": session_id, "created_at": session.created_at if session else None},
            "profiles": entries,
        }
        archive.writestr(zipfile.ZipInfo(MANIFEST, date_time=(1980, 1, 1, 0, 0, 0)), json.dumps(manifest, indent=1))
    yield sink.drain()


# -- import -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    file: str
    kind: str
    dataset_timestamp: int | None
    alias: str | None
    segment_tags: tuple[tuple[str, str], ...]
    size: int
    sha256: str


@dataclass(frozen=True)
class ImportResult:
    """What :func:`import_bundle` created."""

    session_id: str
    profiles: int


def _int_or_none(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not -(2**63) <= value < 2**63:
        raise BundleError(f"The bundle's manifest is invalid: {what} is not an integer.")
    return value


def _text_or_none(value: object, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 4096:
        raise BundleError(f"The bundle's manifest is invalid: {what} is not a string of at most 4096 characters.")
    return value


def read_manifest(archive: zipfile.ZipFile) -> list[_Entry]:
    """The checked profile entries of a bundle's manifest; :class:`BundleError` when it is not one."""
    try:
        info = archive.getinfo(MANIFEST)
    except KeyError:
        raise BundleError(f"The file is a zip but not a songbird bundle: it has no {MANIFEST}.") from None
    if info.file_size > MAX_MANIFEST_BYTES:
        raise BundleError(f"The bundle's {MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes.")
    try:
        manifest = json.loads(archive.read(info))
    except (ValueError, zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"The bundle's {MANIFEST} cannot be read ({type(exc).__name__}); export it again.") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f'The bundle\'s {MANIFEST} is not a songbird bundle manifest (no "format": "{FORMAT}").')
    version = manifest.get("version")
    if isinstance(version, bool) or version != VERSION:  # JSON true is no version 1
        raise BundleError(
            f"The bundle has version {str(version)[:20]}; this server reads version {VERSION}. "
            "Import it with the songbird version that exported it, or export it again."
        )
    profiles = manifest.get("profiles")
    if not isinstance(profiles, list) or len(profiles) > MAX_PROFILES:
        raise BundleError(f"The bundle's manifest is invalid: profiles is not a list of at most {MAX_PROFILES}.")
    entries: list[_Entry] = []
    seen: set[str] = set()
    for n, item in enumerate(profiles, start=1):
        where = f"profile {n}"
        if not isinstance(item, dict):
            raise BundleError(f"The bundle's manifest is invalid: {where} is not an object.")
        file, kind, size, sha256 = item.get("file"), item.get("kind"), item.get("size"), item.get("sha256")
        if not isinstance(file, str) or not _FILE.fullmatch(file) or file in seen:
            raise BundleError(f"The bundle's manifest is invalid: {where} names no file, or one named twice.")
        seen.add(file)
        if kind not in ("batch", "reference"):
            raise BundleError(f"The bundle's manifest is invalid: {where} has kind {str(kind)[:20]!r}.")
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise BundleError(f"The bundle's manifest is invalid: {where} has no size.")
        if not isinstance(sha256, str) or not _HEX64.fullmatch(sha256):
            raise BundleError(f"The bundle's manifest is invalid: {where} has no sha256.")
        tags = item.get("segment_tags", [])
        if not isinstance(tags, list) or not all(
            isinstance(t, dict) and isinstance(t.get("key"), str) and isinstance(t.get("value"), str) for t in tags
        ):
            raise BundleError(f"The bundle's manifest is invalid: {where} has malformed segment_tags.")
        if kind == "reference" and tags:
            raise BundleError(f"The bundle's manifest is invalid: {where} is a reference with segment tags.")
        timestamp = _int_or_none(item.get("dataset_timestamp"), f"{where}'s dataset_timestamp")
        if kind == "batch" and timestamp is None:
            raise BundleError(f"The bundle's manifest is invalid: {where} is a batch without dataset_timestamp.")
        entries.append(
            _Entry(
                file=file,
                kind=kind,
                dataset_timestamp=timestamp,
                alias=_text_or_none(item.get("alias"), f"{where}'s alias"),
                segment_tags=tuple((str(t["key"]), str(t["value"])) for t in tags),
                size=size,
                sha256=sha256,
            )
        )
    return entries


def _extract_checked(
    store: Store, archive: zipfile.ZipFile, entry: _Entry, *, max_columns: int, max_bytes: int
) -> Path:
    """Extract one profile to a temporary file of the blob store, checking its size, sha256, the
    zip's CRC and the cheap structural check; the file's path (the caller removes it on error)."""
    try:
        info = archive.getinfo(entry.file)
    except KeyError:
        raise BundleError(f"The bundle names {entry.file} but does not hold it; export it again.") from None
    if info.file_size != entry.size:
        raise BundleError(f"{entry.file} holds {info.file_size} bytes, not the {entry.size} of the manifest.")
    if entry.size > max_bytes:
        raise BundleError(f"{entry.file} is larger than this server's upload limit of {max_bytes} bytes.")
    fd, path = store.new_temp_file()
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as target, archive.open(info) as source:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                target.write(chunk)
        if digest.hexdigest() != entry.sha256:
            raise BundleError(f"{entry.file} does not have the sha256 of the manifest: the bundle was changed.")
        with open(path, "rb") as file:
            if entry.size == 0:
                raise BundleError(f"{entry.file} is empty: it is not a whylogs profile.")
            with mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ) as view:
                check_profile_bytes(view, max_columns=max_columns)
    except ProfileCheckError as exc:
        path.unlink(missing_ok=True)
        raise BundleError(f"{entry.file} is not a well-formed whylogs profile ({exc}).") from None
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
        path.unlink(missing_ok=True)
        raise BundleError(f"{entry.file} cannot be read from the bundle ({exc}); it is cut short or damaged.") from None
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return path


def _check_quotas(entries: list[_Entry], max_profiles: int | None, max_bytes: int | None) -> None:
    if max_profiles is not None and len(entries) > max_profiles:
        raise BundleError(
            f"It holds {len(entries)} profiles and this server allows {max_profiles} per session "
            "(--max-session-profiles)."
        )
    total = sum(entry.size for entry in entries)
    if max_bytes is not None and total > max_bytes:
        raise BundleError(
            f"Its profiles hold {total} bytes and this server allows {max_bytes} per session (--max-session-bytes)."
        )


def import_bundle(
    store: Store,
    bundle: Path,
    *,
    user_id: str = "bundle-import",
    max_profiles: int | None = None,
    max_bytes: int | None = None,
) -> ImportResult:
    """Create a new session holding the profiles of the bundle file ``bundle`` (see the module
    docstring); :class:`BundleError` (nothing created) when it cannot be imported, or when it
    holds more than the per-session quotas ``max_profiles`` or ``max_bytes`` allow."""
    try:
        archive = zipfile.ZipFile(bundle)
    except (zipfile.BadZipFile, OSError) as exc:
        raise BundleError(f"The file is not a zip bundle ({exc}); it may be cut short. Export it again.") from None
    extracted: list[Path] = []
    try:
        with archive:
            entries = read_manifest(archive)
            _check_quotas(entries, max_profiles, max_bytes)
            for entry in entries:
                extracted.append(
                    _extract_checked(
                        store, archive, entry, max_columns=store.max_columns, max_bytes=store.max_upload_bytes
                    )
                )
        session = store.create_session(user_id)
        landed = 0
        try:
            for entry, path in zip(entries, extracted, strict=True):
                # each a millisecond after the last at least: the bundle's order survives the move
                landed = max(now_ms(), landed + 1)
                upload = store.create_upload(
                    session.id,
                    "batch" if entry.kind == "batch" else "reference",
                    ttl_seconds=60,
                    dataset_timestamp=entry.dataset_timestamp,
                    alias=entry.alias,
                    segment_tags=entry.segment_tags,
                )
                store.store_profile_file(upload.id, path, size=entry.size, sha256=entry.sha256, stored_at=landed)
        except BaseException:
            lifecycle.delete_session(store, session.id)
            raise
        logger.info("imported a bundle of %d profiles", len(entries))
        return ImportResult(session_id=session.id, profiles=len(entries))
    finally:
        for path in extracted:
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
