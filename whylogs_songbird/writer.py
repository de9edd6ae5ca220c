"""The whylogs adapter: ``profile.writer("songbird").option(...).write()``.

whylogs has no plugin entry points: its ``Writers.get`` knows a fixed list of names. Importing
``whylogs_songbird`` wraps ``Writers.get`` once so that ``"songbird"`` resolves to
`SongbirdWriter` and every other name still goes to whylogs.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import fields
from typing import Any

from whylogs.api.writer import Writer, Writers
from whylogs.api.writer.writer import Writable, WriterWrapper

from whylogs_songbird.config import Settings, resolve_settings
from whylogs_songbird.errors import SongbirdError
from whylogs_songbird.profiles import check_alias, items_from, to_millis
from whylogs_songbird.publish import Publisher, PublishResult

logger = logging.getLogger(__name__)

WRITER_NAME = "songbird"

#: Options that pick what to publish rather than where: they live on the writer, not in Settings.
_WRITE_OPTIONS = ("reference_profile_name", "dataset_timestamp")


class SongbirdWriter(Writer):
    """A whylogs Writer that publishes profiles to a songbird guest session and returns links.

    Options (``.option(...)`` or constructor keywords): ``endpoint``, ``session_id``,
    ``reference_profile_name``, ``dataset_timestamp``, ``api_key``, ``org_id``, ``timeout``,
    ``max_retries``, ``backoff``, ``max_workers``, ``outbox``, ``outbox_dir``, ``config_dir``. Unset options come
    from the environment (``SONGBIRD_*``, ``WHYLABS_API_ENDPOINT``), then the config file.

    ``write()`` answers as whylogs writers do: ``(True, url)`` for one profile, ``(True, [(ok, url
    or message), ...])`` for several, ``(False, message)`` on failure. The full `PublishResult`
    is kept in ``last_result``.
    """

    def __init__(self, **options: Any) -> None:
        self._options: dict[str, Any] = {}
        self._settings: Settings | None = None
        self._publisher: Publisher | None = None
        self._lock = threading.Lock()
        self.last_result: PublishResult | None = None
        if options:
            self.option(**options)

    def __repr__(self) -> str:
        shown = {k: ("***" if k == "api_key" else v) for k, v in self._options.items()}
        return f"SongbirdWriter({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def option(self, **kwargs: Any) -> SongbirdWriter:
        """Set options; each is checked now, so a bad value fails here rather than at write time."""
        settings = self._check(kwargs)
        with self._lock:
            self._options.update({k: v for k, v in kwargs.items() if v is not None})
            if settings is not None:
                # A publish running in another thread keeps the old publisher; new writes use new settings.
                self._settings, self._publisher = settings, None
        return self

    def _check(self, kwargs: dict[str, Any]) -> Settings | None:
        """Validate options; returns the settings they give, or None if they change no setting."""
        if kwargs.get("reference_profile_name") is not None:
            check_alias(kwargs["reference_profile_name"])
        if kwargs.get("dataset_timestamp") is not None:
            to_millis(kwargs["dataset_timestamp"])
        settings_options = {k: v for k, v in kwargs.items() if k not in _WRITE_OPTIONS}
        if not settings_options:
            return None
        return resolve_settings({**self._settings_options(), **settings_options})

    def _settings_options(self) -> dict[str, Any]:
        return {k: v for k, v in self._options.items() if k not in _WRITE_OPTIONS}

    @property
    def settings(self) -> Settings:
        """The settings in force: options > environment > config file > defaults (read at first use)."""
        with self._lock:
            if self._settings is None:
                self._settings = resolve_settings(self._settings_options())
            return self._settings

    def _get_publisher(self) -> Publisher:
        settings = self.settings
        with self._lock:
            if self._publisher is None:
                self._publisher = Publisher(settings)
            return self._publisher

    def check_interval(self, interval_seconds: int) -> None:
        """Any rolling interval is fine for songbird."""

    def write(
        self, file: Writable, dest: str | None = None, **kwargs: Any
    ) -> tuple[bool, str | list[tuple[bool, str]]]:
        """Publish ``file`` (any whylogs Writable). ``dest`` is ignored: songbird picks the place.

        Options given as keywords here apply to this call only; ``option()`` sets them for good.
        """
        once = {k: v for k, v in kwargs.items() if v is not None and (k in _WRITE_OPTIONS or k in _SETTINGS)}
        publisher: Publisher | None = None
        try:
            settings = self._check(once)
            choice = {**self._options, **once}
            items = items_from(
                file,
                dataset_timestamp=choice.get("dataset_timestamp"),
                reference_name=choice.get("reference_profile_name"),
            )
            publisher = Publisher(settings) if settings is not None else None
            result = (publisher or self._get_publisher()).publish(items)
        except SongbirdError as exc:
            logger.error("songbird writer: nothing was published: %s", exc)
            return False, f"songbird: nothing was published: {exc}"
        except Exception as exc:  # a whylogs writer reports failure, it does not raise
            logger.exception("songbird writer: nothing was published")
            return False, f"songbird: nothing was published: {type(exc).__name__}: {exc}"
        finally:
            if publisher is not None:
                publisher.close()
        self.last_result = result
        return as_whylogs_answer(result)


_SETTINGS = frozenset(f.name for f in fields(Settings))


def as_whylogs_answer(result: PublishResult) -> tuple[bool, str | list[tuple[bool, str]]]:
    """whylogs' writer answer shape for a `PublishResult`."""
    if len(result.profiles) == 1:
        only = result.profiles[0]
        if only.ok:
            return True, only.observatory_url or result.observatory_url or ""
        return False, f"songbird: {only.label} was not published: {only.error}"
    pairs = [
        (True, p.observatory_url or "") if p.ok else (False, f"{p.label} was not published: {p.error}")
        for p in result.profiles
    ]
    return result.ok, pairs


_REGISTER_LOCK = threading.Lock()


def register() -> None:
    """Make ``"songbird"`` a whylogs writer name. Idempotent; other names are untouched."""
    with _REGISTER_LOCK:
        current = Writers.__dict__["get"]
        builtin = current.__func__ if isinstance(current, staticmethod) else current
        if getattr(builtin, "__songbird_original__", None) is not None:
            return

        def get(name: str, writable: Writable | None = None, **kwargs: Any) -> Writer | WriterWrapper:
            if name == WRITER_NAME:
                writer = SongbirdWriter(**kwargs)
                return WriterWrapper(writable, writer) if writable is not None else writer
            return builtin(name, writable, **kwargs)

        get.__songbird_original__ = builtin  # type: ignore[attr-defined]
        get.__doc__ = builtin.__doc__
        Writers.get = staticmethod(get)
