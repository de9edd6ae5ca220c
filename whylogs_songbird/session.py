"""Guest session lifecycle: reuse the stored session, create one only when none is stored.

Or, in dataset mode (``dataset_id`` set), a `DatasetTarget`: a dataset of an organization,
written through the WhyLabs log API with an API key. `request_slot` and `request_link` are the
seam where the two differ; everything above them publishes the same way to either.

State lives in ``<config dir>/sessions.json``: a per-installation ``userId`` and one session id
per endpoint. Every read-modify-write happens under a file lock and the file is replaced
atomically, so N processes starting at once create exactly one session. There are no
validation calls: a session is only replaced when an operation says it is unknown or expired.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from filelock import FileLock, Timeout

from whylogs_songbird.atomic import write_json_atomic
from whylogs_songbird.client import SongbirdClient
from whylogs_songbird.config import DEFAULT_LOCAL_PORT, LEGACY_LOCAL_PORT, Settings, resolve_settings
from whylogs_songbird.connect import make_client
from whylogs_songbird.errors import ConfigError, SessionBusyError, SessionNotFoundError
from whylogs_songbird.models import GetProfileObservatoryLinkResponse, SegmentTag

logger = logging.getLogger(__name__)

STATE_FILE = "sessions.json"
T = TypeVar("T")


class SessionStore:
    """The stored ``userId`` and session ids, one per endpoint, in ``<directory>/sessions.json``."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / STATE_FILE
        self._thread_lock = threading.RLock()
        self._file_lock = FileLock(str(self.directory / f"{STATE_FILE}.lock"), timeout=60, thread_local=False)

    @classmethod
    def for_directory(cls, directory: Path) -> SessionStore:
        """The one store of this process for ``directory`` (so its locks are shared by every writer)."""
        global _STORES_PID, _STORES_LOCK
        key = str(Path(directory).expanduser().resolve())
        if os.getpid() != _STORES_PID:  # forked: locks held by the parent's threads are not ours
            _STORES_LOCK = threading.Lock()
            _STORES.clear()
            _STORES_PID = os.getpid()
        with _STORES_LOCK:
            store = _STORES.get(key)
            if store is None:
                store = _STORES[key] = cls(Path(key))
            return store

    def lock(self) -> _Locked:
        """Hold this (re-entrant) lock across a read-modify-write, in this process and across processes."""
        return _Locked(self)

    def _read(self) -> dict[str, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(text)
        except ValueError:
            raise ConfigError(
                f"The session file {self.path} is not valid JSON: delete it (a new guest session will be made)."
            ) from None
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, Any]) -> None:
        write_json_atomic(self.path, data)

    def user_id(self) -> str:
        """The installation's ``userId`` (a UUID), created and stored on first use."""
        with self.lock():
            data = self._read()
            user_id = data.get("userId")
            if not isinstance(user_id, str) or not user_id:
                user_id = str(uuid.uuid4())
                data["userId"] = user_id
                self._write(data)
            return user_id

    def get(self, endpoint: str) -> str | None:
        """The session id stored for ``endpoint``, if any."""
        with self.lock():
            entry = self._read().get("sessions", {}).get(endpoint)
        return entry.get("sessionId") if isinstance(entry, dict) else None

    def set(self, endpoint: str, session_id: str) -> None:
        with self.lock():
            data = self._read()
            data.setdefault("sessions", {})[endpoint] = {"sessionId": session_id, "createdAt": int(time.time())}
            self._write(data)

    def remember_references(self, endpoint: str, session_id: str, names: dict[str, str]) -> None:
        """Keep the ids of named reference profiles published into the stored session of ``endpoint``."""
        with self.lock():
            data = self._read()
            entry = data.get("sessions", {}).get(endpoint)
            if not isinstance(entry, dict) or entry.get("sessionId") != session_id:
                return  # not the stored session (a pinned one): nothing to remember it by
            references = entry.setdefault("references", {})
            if all(references.get(k) == v for k, v in names.items()):
                return
            references.update(names)
            self._write(data)

    def reference_id(self, endpoint: str, session_id: str, name: str) -> str | None:
        """The id of the reference named ``name`` published into ``session_id`` of ``endpoint``, if remembered."""
        with self.lock():
            entry = self._read().get("sessions", {}).get(endpoint)
        if not isinstance(entry, dict) or entry.get("sessionId") != session_id:
            return None
        found = entry.get("references", {}).get(name)
        return found if isinstance(found, str) else None

    def carry_over(self, old: str, new: str) -> None:
        """Store ``old``'s session (and its references) for ``new`` too, if ``new`` has none yet."""
        with self.lock():
            data = self._read()
            sessions = data.get("sessions", {})
            if new in sessions or not isinstance(sessions.get(old), dict):
                return
            sessions[new] = dict(sessions[old])
            self._write(data)
        logger.info("songbird: %s now uses the guest session stored for %s", new, old)

    def forget(self, endpoint: str) -> str | None:
        """Forget the session stored for ``endpoint``; returns the id that was stored."""
        with self.lock():
            data = self._read()
            entry = data.get("sessions", {}).pop(endpoint, None)
            if entry is not None:
                self._write(data)
        return entry.get("sessionId") if isinstance(entry, dict) else None


_STORES: dict[str, SessionStore] = {}
_STORES_LOCK = threading.Lock()
_STORES_PID = os.getpid()


class _Locked:
    """The store's thread lock, then its file lock; both re-entrant."""

    def __init__(self, store: SessionStore) -> None:
        self._store = store

    def __enter__(self) -> None:
        self._store._thread_lock.acquire()
        try:
            self._store.directory.mkdir(parents=True, exist_ok=True)
            self._store._file_lock.acquire()
        except Timeout:
            self._store._thread_lock.release()
            raise SessionBusyError(
                f"Another process held the session lock {self._store._file_lock.lock_file} for "
                f"{self._store._file_lock.timeout:g} s (it is probably waiting on a slow server to create a "
                "session); try again."
            ) from None
        except BaseException:
            self._store._thread_lock.release()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            self._store._file_lock.release()
        finally:
            self._store._thread_lock.release()


class GuestSession:
    """The guest session one writer publishes into.

    ``session_id`` pins an explicit session (from ``option(session_id=...)`` or
    ``SONGBIRD_SESSION_ID``); otherwise the id stored for the endpoint is reused, and a new one is
    created (and stored) only when none is stored.
    """

    def __init__(self, client: SongbirdClient, store: SessionStore, session_id: str | None = None) -> None:
        self.client = client
        self.store = store
        self._explicit = session_id
        self._current: str | None = session_id
        self._lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return self.client.endpoint

    @property
    def pinned_session_id(self) -> str | None:
        """The explicit session this publishes into, if one was given (and not since renewed)."""
        return self._explicit

    def session_id(self) -> str:
        """The session id to use, creating and storing a session if none is stored."""
        with self._lock:
            if self._current:
                return self._current
            with self.store.lock():
                stored = self.store.get(self.endpoint)
                if stored is None:
                    stored = self._create_and_store()
            self._current = stored
            return stored

    def _create_and_store(self) -> str:
        session_id = self.client.create_session(self.store.user_id()).id
        self.store.set(self.endpoint, session_id)
        logger.info("Created guest session %s at %s", session_id, self.endpoint)
        return session_id

    def renew(self, stale_id: str) -> str:
        """Replace ``stale_id`` after the server said it is unknown or expired (once, across threads and processes)."""
        with self._lock:
            if self._current and self._current != stale_id:
                return self._current  # another thread already renewed it
            with self.store.lock():
                stored = self.store.get(self.endpoint)
                if stored and stored != stale_id:
                    fresh = stored  # another process already renewed it
                else:
                    fresh = self._create_and_store()
            logger.warning(
                "Guest session %s at %s is unknown or expired; created new session %s. "
                "Observatory links of the old session no longer work.",
                stale_id,
                self.endpoint,
                fresh,
            )
            self._current = fresh
            self._explicit = None
            return fresh

    def call(self, operation: Callable[[str], T]) -> T:
        """Run ``operation(session_id)``; if the session is unknown or expired, renew it once and retry."""
        session_id = self.session_id()
        try:
            return operation(session_id)
        except SessionNotFoundError:
            fresh = self.renew(session_id)
            return operation(fresh)

    def forget(self) -> str | None:
        """Forget the stored session for this endpoint; the next publish starts a new one."""
        with self._lock:
            self._current = self._explicit = None
            return self.store.forget(self.endpoint)

    def new(self) -> str:
        """Start a new session now and store it, replacing any stored one."""
        with self._lock, self.store.lock():
            self._current = self._create_and_store()
            self._explicit = None
            return self._current


class DatasetTarget:
    """A dataset of an organization, written through the WhyLabs log API (dataset mode).

    Nothing to create or renew: the dataset is made by the server on its first write. Its
    ``session_id``, as publish results and links carry it, is ``ORG/DATASET``.
    """

    pinned_session_id: str | None = None

    def __init__(self, client: SongbirdClient, store: SessionStore, org_id: str, dataset_id: str) -> None:
        self.client = client
        self.store = store
        self.org_id = org_id
        self.dataset_id = dataset_id

    @property
    def endpoint(self) -> str:
        return self.client.endpoint

    @property
    def dataset(self) -> tuple[str, str]:
        return self.org_id, self.dataset_id

    def session_id(self) -> str:
        return f"{self.org_id}/{self.dataset_id}"

    def call(self, operation: Callable[[str], T]) -> T:
        return operation(self.session_id())

    def __repr__(self) -> str:
        return f"DatasetTarget({self.endpoint!r}, org_id={self.org_id!r}, dataset_id={self.dataset_id!r})"


#: Where a writer publishes: a guest session (the default) or a dataset of an organization.
Target = GuestSession | DatasetTarget


def open_target(client: SongbirdClient, settings: Settings, session_id: str | None = None) -> Target:
    """The target ``settings`` describe: their dataset in dataset mode, else the (stored or pinned) guest session."""
    if settings.dataset is not None:
        return DatasetTarget(client, SessionStore.for_directory(settings.config_dir), *settings.dataset)
    return GuestSession(client, store_for(settings), session_id if session_id is not None else settings.session_id)


@dataclass(frozen=True)
class DatasetSlot:
    """An upload slot of a dataset, shaped as a session's (the log API's answers carry no link)."""

    id: str
    upload_url: str = field(repr=False)
    observatory_url: str | None = None


#: What a profile is to songbird: a dataset (batch) profile or a reference profile.
Kind = Literal["batch", "reference"]


def request_slot(
    session: Target,
    kind: Kind,
    dataset_timestamp: int,
    *,
    segment_tags: Sequence[SegmentTag] = (),
    alias: str | None = None,
) -> tuple[str, Any]:
    """Ask for one upload slot in ``session`` (renewing an unknown session once); returns (session id, slot).

    The one way a publish and an outbox flush ask for a slot; in dataset mode, through the log API.
    """
    if isinstance(session, DatasetTarget):
        org, dataset = session.dataset
        given: Any
        if kind == "reference" and segment_tags:
            # one segment of a segmented reference: kept under the reference's own name with its tags
            name = _unsegmented_alias(alias, segment_tags)
            made = session.client.create_reference_profile(org, dataset, name, dataset_timestamp, [list(segment_tags)])
            return session.session_id(), DatasetSlot(id=made.id, upload_url=made.upload_urls[0])
        if kind == "reference":
            given = session.client.log_reference(org, dataset, alias, dataset_timestamp)
        else:
            given = session.client.log_async(org, dataset, dataset_timestamp, list(segment_tags))
        return session.session_id(), DatasetSlot(id=given.id, upload_url=given.upload_url)

    def ask(session_id: str) -> tuple[str, Any]:
        if kind == "reference":
            return session_id, session.client.create_reference_profile_upload(session_id, alias, dataset_timestamp)
        return session_id, session.client.create_dataset_profile_upload(
            session_id, dataset_timestamp, list(segment_tags)
        )

    return session.call(ask)


def _unsegmented_alias(alias: str | None, segment_tags: Sequence[SegmentTag]) -> str:
    """``train`` for ``train[region=north]``: the name a segment of a reference was given
    (`whylogs_songbird.profiles` names segments so in guest sessions, where segments have no tags)."""
    name = alias or "reference"
    suffix = "[" + ",".join(f"{t.key}={t.value}" for t in segment_tags) + "]"
    return name[: -len(suffix)] if name.endswith(suffix) and len(name) > len(suffix) else name


def request_link(
    session: Target, session_id: str, batch_profile_timestamps: list[int], reference_profile_ids: list[str]
) -> GetProfileObservatoryLinkResponse:
    """One combined observatory link (and one per profile) for up to 3 profiles published in ``session_id``."""
    if isinstance(session, DatasetTarget):
        org, dataset = session.dataset
        return session.client.get_dataset_observatory_link(
            org, dataset, batch_profile_timestamps, reference_profile_ids
        )
    return session.client.get_session_profile_observatory_link(
        session_id, batch_profile_timestamps, reference_profile_ids
    )


# -- the stored session, for people: used by ``songbird session`` and notebooks -----------------


def store_for(settings: Settings) -> SessionStore:
    """The session store of ``settings``. For the embedded default on its default port, a session
    stored for the earlier default (``http://127.0.0.1:8787``) is carried over: the local server
    keeps its data when its port changes, so that session and its links live on."""
    store = SessionStore.for_directory(settings.config_dir)
    if settings.embedded and settings.local_port == DEFAULT_LOCAL_PORT:
        try:
            store.carry_over(f"http://127.0.0.1:{LEGACY_LOCAL_PORT}", settings.endpoint)
        except (OSError, SessionBusyError) as exc:
            logger.debug("songbird: could not carry over the earlier local session: %s", exc)
    return store


def _open(options: dict[str, Any]) -> tuple[Settings, GuestSession]:
    """The settings and the stored session of ``options`` (these helpers act on the stored session;
    a pinned ``session_id`` is read from the settings where it matters)."""
    settings = resolve_settings(options)
    client = make_client(settings)
    return settings, GuestSession(client, store_for(settings))


def current_session(**options: Any) -> str | None:
    """The session id that the next publish to the endpoint will use, or None if none is stored yet."""
    settings, session = _open(options)
    try:
        return settings.session_id or session.store.get(session.endpoint)
    finally:
        session.client.close()


def new_session(**options: Any) -> str:
    """Start a new guest session now and store it for the endpoint, replacing the stored one."""
    _, session = _open(options)
    try:
        return session.new()
    finally:
        session.client.close()


def forget_session(**options: Any) -> str | None:
    """Forget the session stored for the endpoint (the server keeps it); returns its id."""
    _, session = _open(options)
    try:
        return session.forget()
    finally:
        session.client.close()


def claim_session(*, org_id: str | None = None, api_key: str | None = None, **options: Any) -> str:
    """Claim the stored guest session into organization ``org_id`` with ``api_key``, then forget it.

    ``org_id`` and ``api_key`` default to ``SONGBIRD_ORG_ID`` and ``SONGBIRD_API_KEY`` (or the
    config file). Returns the claimed session's id.
    """
    settings, session = _open({**options, "org_id": org_id, "api_key": api_key})
    try:
        if not settings.org_id:
            raise ConfigError("claim_session needs org_id=... (or SONGBIRD_ORG_ID): the organization to claim into.")
        if not settings.api_key:
            raise ConfigError("claim_session needs api_key=... (or SONGBIRD_API_KEY): a key of that organization.")
        session_id = settings.session_id or session.store.get(session.endpoint)
        if not session_id:
            raise ConfigError(f"There is no stored guest session for {session.endpoint}: nothing to claim.")
        session.client.claim_guest_session(session_id, settings.org_id)  # the client holds settings.api_key
        if session.store.get(session.endpoint) == session_id:
            session.store.forget(session.endpoint)
        logger.info("Claimed guest session %s into organization %s", session_id, settings.org_id)
        return session_id
    finally:
        session.client.close()


def delete_session(session_id: str | None = None, **options: Any) -> str:
    """Delete a guest session on the server with all its profiles (default: the stored session);
    the stored session is forgotten when it is the one deleted. Returns the deleted id."""
    settings, session = _open(options)
    try:
        target = session_id or settings.session_id or session.store.get(session.endpoint)
        if not target:
            raise ConfigError(f"There is no stored guest session for {session.endpoint}: name the session to delete.")
        session.client.delete_session(target)
        if session.store.get(session.endpoint) == target:
            session.store.forget(session.endpoint)
        logger.info("Deleted guest session %s", target)
        return target
    finally:
        session.client.close()
