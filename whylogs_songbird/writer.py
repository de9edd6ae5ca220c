"""The whylogs adapter: ``profile.writer("songbird").option(...).write()``.

whylogs has no plugin entry points: its ``Writers.get`` knows a fixed list of names. Importing
``whylogs_songbird`` wraps ``Writers.get`` once so that ``"songbird"`` resolves to
`SongbirdWriter` and every other name still goes to whylogs.

whylogs code builds a new writer per call (``view.writer("songbird").write()``), so a writer is
cheap: it resolves its settings and takes the process's shared `Publisher` for them (one HTTP
connection pool and one stored session per process and per settings).

Logging: every published profile's link at INFO; a failed write as ONE line at ERROR saying why
and what to do (the traceback at DEBUG); an empty profile (a rolling logger's interval without
data) is skipped at DEBUG.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from whylogs.api.writer import Writer, Writers
from whylogs.api.writer.writer import Writable, WriterWrapper

from whylogs_songbird.config import Settings, option_names, resolve_settings, unknown_option_message
from whylogs_songbird.errors import ConfigError, EmptyProfileError, SongbirdError
from whylogs_songbird.profiles import check_alias, items_from, to_millis
from whylogs_songbird.publish import Publisher, PublishResult, shared_publisher

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
    of the latest write, failed ones included, is kept in ``last_result``.

    Errors, deliberately: a wrong option name or value is a mistake in the code, so ``option()``
    (and the constructor, and ``writer("songbird", ...)``) raises `ConfigError` (a `ValueError`)
    right there, before anything is profiled or sent. ``write()`` never raises: an unreachable or
    failing server, a refused profile, even a bad option given to ``write()`` itself, is its
    ``(False, message)`` answer (and the profile waits in the outbox when sending again can help).
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
        """Set options; each is checked now: a wrong name or value raises `ConfigError` here, never at write time."""
        settings = self._check(kwargs)
        with self._lock:
            self._options.update({k: v for k, v in kwargs.items() if v is not None})
            if settings is not None:
                # A publish running in another thread keeps the old publisher; new writes use new settings.
                self._settings, self._publisher = settings, None
        return self

    def _check(self, kwargs: dict[str, Any]) -> Settings | None:
        """Validate options; returns the settings they give, or None if they change no setting."""
        unknown = sorted(k for k in kwargs if k not in _ALL_OPTIONS)
        if unknown:
            raise ConfigError(unknown_option_message(unknown, sorted(_ALL_OPTIONS)))
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
                self._publisher = shared_publisher(settings)
            return self._publisher

    def check_interval(self, interval_seconds: int) -> None:
        """Any rolling interval is fine for songbird."""

    def write(
        self, file: Writable, dest: str | None = None, **kwargs: Any
    ) -> tuple[bool, str | list[tuple[bool, str]]]:
        """Publish ``file`` (any whylogs Writable). ``dest`` is ignored: songbird picks the place.

        Options given as keywords here apply to this call only; ``option()`` sets them for good.
        """
        once = {k: v for k, v in kwargs.items() if v is not None and k in _ALL_OPTIONS}
        endpoint = self._settings.endpoint if self._settings is not None else "songbird"
        try:
            settings = self._check(once)
            choice = {**self._options, **once}
            items = items_from(
                file,
                dataset_timestamp=choice.get("dataset_timestamp"),
                reference_profile_name=choice.get("reference_profile_name"),
            )
            publisher = shared_publisher(settings) if settings is not None else self._get_publisher()
            endpoint = publisher.client.endpoint
            result = publisher.publish(items)
        except EmptyProfileError as exc:
            logger.debug("songbird writer: nothing to publish, skipped: %s", exc)
            self.last_result = PublishResult(endpoint=endpoint, profiles=[], error=str(exc))
            return False, f"songbird: nothing to publish: {exc}"
        except SongbirdError as exc:
            logger.error("songbird writer: nothing was published: %s", exc)
            logger.debug("songbird writer: the failure in full", exc_info=exc)
            self.last_result = PublishResult(endpoint=endpoint, profiles=[], error=str(exc))
            return False, f"songbird: nothing was published: {exc}"
        except Exception as exc:  # a whylogs writer reports failure, it does not raise
            logger.error("songbird writer: nothing was published: %s: %s", type(exc).__name__, exc)
            logger.debug("songbird writer: the failure in full", exc_info=exc)
            self.last_result = PublishResult(endpoint=endpoint, profiles=[], error=f"{type(exc).__name__}: {exc}")
            return False, f"songbird: nothing was published: {type(exc).__name__}: {exc}"
        self.last_result = result
        _log_outcome(result)
        return as_whylogs_answer(result)


def _log_outcome(result: PublishResult) -> None:
    """Links at INFO; the failures of a write as one ERROR line (the first failure's reason)."""
    if logger.isEnabledFor(logging.INFO):
        for profile in result.landed:
            logger.info("songbird: published %s: %s", profile.label, profile.observatory_url or "(no link)")
    if result.failed:
        first = result.failed[0]
        more = f" (and {len(result.failed) - 1} more failed)" if len(result.failed) > 1 else ""
        logger.error(
            "songbird writer: %d of %d profiles not published: %s: %s%s",
            len(result.failed),
            len(result.profiles),
            first.label,
            first.error,
            more,
        )


_SETTINGS = frozenset(option_names())
#: Every option a writer takes: the settings, and what to publish.
_ALL_OPTIONS = _SETTINGS | frozenset(_WRITE_OPTIONS)


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
