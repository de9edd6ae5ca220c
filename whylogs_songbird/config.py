"""Settings and where they come from.

Precedence, everywhere the same: explicit argument / ``option()`` > environment variable >
config file (``<config dir>/config.json``) > default. The config dir is the platform's user
config directory for ``whylogs-songbird`` unless ``SONGBIRD_CONFIG_DIR`` names another.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import platformdirs

from whylogs_songbird.client import (
    DEFAULT_BACKOFF_FACTOR,
    DEFAULT_MAX_RETRIES,
    validate_endpoint,
    validate_name,
    validate_session_id,
)
from whylogs_songbird.errors import ConfigError
from whylogs_songbird.models import HOSTED_ENDPOINT as HOSTED_ENDPOINT

APP_NAME = "whylogs-songbird"
CONFIG_FILE = "config.json"

#: Environment variables, in the order they are consulted for each setting.
ENV_VARS: dict[str, tuple[str, ...]] = {
    "endpoint": ("SONGBIRD_API_ENDPOINT", "WHYLABS_API_ENDPOINT"),
    "session_id": ("SONGBIRD_SESSION_ID",),
    # whylogs' own names are the fallback: a pipeline configured for writer("whylabs") needs no new ones
    "api_key": ("SONGBIRD_API_KEY", "WHYLABS_API_KEY"),
    "org_id": ("SONGBIRD_ORG_ID", "WHYLABS_DEFAULT_ORG_ID"),
    "dataset_id": ("SONGBIRD_DATASET_ID", "WHYLABS_DEFAULT_DATASET_ID"),
    "timeout": ("SONGBIRD_TIMEOUT",),
    "max_retries": ("SONGBIRD_MAX_RETRIES",),
    "backoff": ("SONGBIRD_BACKOFF",),
    "max_workers": ("SONGBIRD_MAX_WORKERS",),
    "outbox": ("SONGBIRD_OUTBOX",),
    "outbox_dir": ("SONGBIRD_OUTBOX_DIR",),
    "local_port": ("SONGBIRD_LOCAL_PORT",),
    "local_data_dir": ("SONGBIRD_LOCAL_DATA_DIR",),
}

#: The port of the local server used when no endpoint is set anywhere (no common data tool's default:
#: Dask's dashboard has 8787, Jupyter 8888, MLflow 5000, Ray 8265, Spark 4040, TensorBoard 6006, ...).
DEFAULT_LOCAL_PORT = 8737
#: The default port of earlier versions (Dask's dashboard's too): a session stored for it is carried over.
LEGACY_LOCAL_PORT = 8787
#: The hosted WhyLabs service (``models.HOSTED_ENDPOINT``) is one setting away: ``endpoint=HOSTED_ENDPOINT``.

#: Fields of `Settings` that are derived, not options a user sets.
_DERIVED = frozenset({"embedded"})


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The directory holding ``config.json``, the stored guest sessions and the outbox."""
    override = (os.environ if environ is None else environ).get("SONGBIRD_CONFIG_DIR")
    return Path(override) if override else Path(platformdirs.user_config_dir(APP_NAME))


@dataclass(frozen=True)
class Settings:
    """Resolved settings of one writer or publish call. The API key never shows in the repr."""

    #: The songbird API base URL. Unset everywhere: the embedded default, a local server at
    #: ``http://127.0.0.1:<local_port>`` started on first use (``embedded`` is then True).
    endpoint: str = f"http://127.0.0.1:{DEFAULT_LOCAL_PORT}"
    session_id: str | None = None
    api_key: str | None = field(default=None, repr=False)
    org_id: str | None = None
    #: Set: publish into this dataset of ``org_id`` through the WhyLabs log API with ``api_key``
    #: (dataset mode) instead of a guest session.
    dataset_id: str | None = None
    timeout: float = 60.0
    max_retries: int = DEFAULT_MAX_RETRIES
    #: Seconds: the base of the exponential backoff between retries (the client's ``backoff_factor``).
    backoff: float = DEFAULT_BACKOFF_FACTOR
    max_workers: int = 32
    outbox: bool = True
    outbox_dir: Path | None = None
    config_dir: Path = field(default_factory=config_dir)
    #: Port of the embedded default server (used only when no endpoint is set).
    local_port: int = DEFAULT_LOCAL_PORT
    #: Data dir of the embedded default server; None: ``<user data dir>/whylogs-songbird/server``.
    local_data_dir: Path | None = None
    #: True when no endpoint was set anywhere and ``endpoint`` is the embedded local server.
    embedded: bool = False

    def __repr__(self) -> str:
        shown = ", ".join(
            f"{f.name}={'***' if f.name == 'api_key' and self.api_key else getattr(self, f.name)!r}"
            for f in fields(self)
        )
        return f"Settings({shown})"

    @property
    def dataset(self) -> tuple[str, str] | None:
        """(org id, dataset id) in dataset mode, else None (a guest session)."""
        return (self.org_id, self.dataset_id) if self.dataset_id and self.org_id else None

    @property
    def outbox_path(self) -> Path:
        return self.outbox_dir or self.config_dir / "outbox"

    @property
    def server_data_dir(self) -> Path:
        """Where the embedded default server keeps its data (and its pid file and log)."""
        return self.local_data_dir or default_server_data_dir()


def default_server_data_dir() -> Path:
    """``<user data dir>/whylogs-songbird/server``: the data of ``songbird serve`` and of the embedded default."""
    return Path(platformdirs.user_data_dir(APP_NAME)) / "server"


def option_names() -> list[str]:
    """Every setting a user may give (options, environment, config file)."""
    return sorted(f.name for f in fields(Settings) if f.name not in _DERIVED)


def unknown_option_message(unknown: list[str], valid: list[str], where: str = "songbird option") -> str:
    """'Unknown ... 'x'; did you mean 'y'? Valid names: ...' for the first unknown name."""
    first = unknown[0]
    close = difflib.get_close_matches(first, valid, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else "."
    names = ", ".join(repr(u) for u in unknown)
    return f"Unknown {where}{'s' if len(unknown) > 1 else ''} {names}{hint} Valid names: {', '.join(valid)}."


def _parse_bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, not {value!r}.")


def _coerce(name: str, value: Any) -> Any:
    """Check and convert one setting's value; raise `ConfigError` with what to do on bad input."""
    if name == "endpoint":
        return validate_endpoint(value)
    if name in ("session_id", "api_key", "org_id", "dataset_id"):
        if not isinstance(value, str) or not value.strip():
            raise ConfigError(f"{name} must be a non-empty string.")
        if name == "session_id":
            return validate_session_id(value.strip())
        if name == "dataset_id":
            return validate_name(value.strip(), "dataset")
        return value.strip()
    if name in ("timeout", "backoff"):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{name} must be a number of seconds, not {value!r}.") from None
        if not math.isfinite(number):
            raise ConfigError(f"{name} must be a finite number of seconds, not {value!r}.")
        if name == "timeout" and not number > 0:
            raise ConfigError(f"timeout must be more than 0 seconds, not {value!r}.")
        if name == "backoff" and not 0 <= number <= 60:
            raise ConfigError(f"backoff must be from 0 to 60 seconds, not {value!r}.")
        return number
    if name == "local_port":
        try:
            port = int(value)
            if isinstance(value, bool) or (isinstance(value, float) and value != port):
                raise ValueError(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"local_port must be a port number, not {value!r}.") from None
        if not 1 <= port <= 65535:
            raise ConfigError(f"local_port must be from 1 to 65535, not {value!r}.")
        return port
    if name in ("max_retries", "max_workers"):
        try:
            number = int(value)
            if isinstance(value, bool) or (isinstance(value, float) and value != number):
                raise ValueError(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{name} must be a whole number, not {value!r}.") from None
        low = 0 if name == "max_retries" else 1
        if number < low or number > 64:
            raise ConfigError(f"{name} must be between {low} and 64, not {value!r}.")
        return number
    if name == "outbox":
        return _parse_bool(name, value)
    if name in ("outbox_dir", "config_dir", "local_data_dir"):
        if not isinstance(value, str | os.PathLike) or not str(value).strip():
            raise ConfigError(f"{name} must be a directory path, not {value!r}.")
        return Path(value).expanduser()
    raise ConfigError(f"unknown setting {name!r}")


def read_config_file(directory: Path) -> dict[str, Any]:
    """The settings in ``<directory>/config.json`` (empty if there is none)."""
    path = directory / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"Cannot read the config file {path}: {exc.strerror}.") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"The config file {path} is not valid JSON ({exc}); fix or delete it.") from None
    if not isinstance(data, dict):
        raise ConfigError(f"The config file {path} must hold a JSON object of settings.")
    known = [name for name in option_names() if name != "config_dir"]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"The config file {path}: " + unknown_option_message(unknown, known, "setting"))
    return data


_RESOLVED: dict[tuple[Any, ...], Settings] = {}
_RESOLVED_LOCK = threading.Lock()
_ENV_NAMES = tuple(sorted({var for names in ENV_VARS.values() for var in names} | {"SONGBIRD_CONFIG_DIR"}))


def _file_state(path: Path) -> bytes | None:
    """The config file's bytes (small; reading them is cheap, and unlike its mtime they cannot be stale)."""
    try:
        return path.read_bytes()
    except OSError:
        return None


def resolve_settings(options: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from explicit ``options`` > environment > config file > defaults.

    The answer is remembered per process for the same options, environment variables and config
    file contents, so a new writer per call does not redo the checks.
    """
    options = {k: v for k, v in (options or {}).items() if v is not None}
    env = os.environ if environ is None else environ
    try:
        directory_hint = Path(options["config_dir"]) if "config_dir" in options else config_dir(env)
        key: tuple[Any, ...] | None = (
            tuple(sorted(options.items())),
            tuple(env.get(name) for name in _ENV_NAMES),
            str(directory_hint),
            _file_state(directory_hint / CONFIG_FILE),
        )
        hash(key)
    except (TypeError, ValueError):  # an unhashable or odd option: resolve without the cache
        key = None
    if key is not None:
        cached = _RESOLVED.get(key)
        if cached is not None:
            return cached
    settings = _resolve(options, env)
    if key is not None:
        with _RESOLVED_LOCK:
            if len(_RESOLVED) >= 256:
                _RESOLVED.clear()
            _RESOLVED[key] = settings
    return settings


def _resolve(options: dict[str, Any], env: Mapping[str, str]) -> Settings:
    known = option_names()
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(unknown_option_message(unknown, known))
    directory = _coerce("config_dir", options["config_dir"]) if "config_dir" in options else config_dir(env)
    from_file = read_config_file(directory)
    values: dict[str, Any] = {"config_dir": directory}
    for f in fields(Settings):
        if f.name == "config_dir" or f.name in _DERIVED:
            continue
        if f.name in options:
            values[f.name] = _coerce(f.name, options[f.name])
            continue
        from_env = next((env[var] for var in ENV_VARS.get(f.name, ()) if env.get(var)), None)
        if from_env is not None:
            values[f.name] = _coerce(f.name, from_env)
        elif f.name in from_file and from_file[f.name] is not None:
            values[f.name] = _coerce(f.name, from_file[f.name])
    whylabs_dataset_only = (
        "dataset_id" not in options
        and not env.get("SONGBIRD_DATASET_ID")
        and bool(env.get("WHYLABS_DEFAULT_DATASET_ID"))
    )
    if whylabs_dataset_only and "endpoint" not in values:
        # whylogs' own WHYLABS_* names describe a pipeline's hosted dataset: they choose dataset mode only
        # where an endpoint is set too, never for the embedded default (a local server holds no API keys)
        values.pop("dataset_id", None)
    whylabs_org_only = (
        "org_id" not in options and not env.get("SONGBIRD_ORG_ID") and bool(env.get("WHYLABS_DEFAULT_ORG_ID"))
    )
    in_dataset_mode = bool(values.get("dataset_id"))
    if in_dataset_mode and ("org_id" not in values or whylabs_org_only) and ":" in values.get("api_key", ""):
        # whylogs' key format KEYID.SECRET:ORG names its organization; whylogs prefers it to
        # WHYLABS_DEFAULT_ORG_ID, and so do we in dataset mode (an explicit org_id or SONGBIRD_ORG_ID
        # wins). A guest session's claim names its org itself.
        suffix = values["api_key"].rsplit(":", 1)[1].strip()
        if suffix:
            values["org_id"] = suffix
    if values.get("dataset_id"):
        if values.get("session_id"):
            raise ConfigError(
                "Both session_id and dataset_id are set: a writer publishes into a guest session or into a "
                "dataset, not both. Unset one (SONGBIRD_SESSION_ID, or SONGBIRD_DATASET_ID/WHYLABS_DEFAULT_DATASET_ID)."
            )
        if not values.get("api_key"):
            raise ConfigError(
                f"dataset_id {values['dataset_id']!r} is set but there is no API key: pass api_key=..., or set "
                "SONGBIRD_API_KEY (or WHYLABS_API_KEY). Unset dataset_id to publish into a guest session."
            )
        if not values.get("org_id"):
            raise ConfigError(
                f"dataset_id {values['dataset_id']!r} is set but no organization: pass org_id=..., set "
                "SONGBIRD_ORG_ID (or WHYLABS_DEFAULT_ORG_ID), or use a key ending in ':<org-id>'."
            )
        values["org_id"] = validate_name(values["org_id"], "organization")
    values["embedded"] = "endpoint" not in values
    if values["embedded"]:
        values["endpoint"] = f"http://127.0.0.1:{values.get('local_port', DEFAULT_LOCAL_PORT)}"
    return Settings(**values)
