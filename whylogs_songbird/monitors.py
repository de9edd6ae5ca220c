"""Monitors as code: a TOML file of checks evaluated against a session's timeline. Pure logic, no HTTP.

A monitors file::

    reference = "training"          # alias (or ref-… id) of the reference to compare against
    granularity = "day"             # optional: hour | day | week | month (default: the timeline's)

    [[monitor]]
    columns = ["*"]                 # names, or "*" for every column
    metric = "drift"
    fail_on = "drift"               # drift | possible_drift
    against = "reference"           # optional: reference (default) | previous bucket

    [[monitor]]
    columns = ["credit_score"]
    metric = "null_fraction"
    max = 0.05                      # fails above max (and/or below min)

Monitors are evaluated from profiles alone: each one reads the numbers the timeline holds for a
bucket — whylogs' drift verdict (its KS and chi-square tests with its thresholds) for ``drift``, and
the values read from whylogs' sketches (counts, KLL quantiles, HLL distinct estimate, frequent
items) for the others. The same function serves ``songbird check``, the server's alerts and notebooks.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from whylogs_songbird.column_stats import DRIFT_CATEGORIES
from whylogs_songbird.timeline import GRANULARITIES, Granularity

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

Metric = Literal[
    "drift", "count", "null_count", "null_fraction", "mean", "stddev", "min", "p5", "p50", "p95", "max",
    "distinct", "top_share",
]  # fmt: skip
METRICS: tuple[str, ...] = get_args(Metric)
#: The metrics compared with ``min``/``max`` (every one but ``drift``).
THRESHOLD_METRICS = tuple(m for m in METRICS if m != "drift")
FailOn = Literal["drift", "possible_drift"]
Against = Literal["reference", "previous"]


class MonitorsError(ValueError):
    """A monitors file that cannot be used: the message names the file, the monitor and what to fix."""


class Monitor(BaseModel):
    """One check of a monitors file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    columns: tuple[str, ...] = Field(min_length=1)
    metric: Metric
    fail_on: FailOn | None = None
    against: Against = "reference"
    min: float | None = None
    max: float | None = None

    @field_validator("columns", mode="before")
    @classmethod
    def _one_column(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("min", "max")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @model_validator(mode="after")
    def _complete(self) -> Monitor:
        if self.metric == "drift":
            if self.min is not None or self.max is not None:
                raise ValueError('a drift monitor takes fail_on = "drift" or "possible_drift", not min/max')
        else:
            if self.fail_on is not None:
                raise ValueError(f"fail_on is for drift monitors; a {self.metric} monitor takes min and/or max")
            if self.against != "reference":
                raise ValueError(f"against is for drift monitors; a {self.metric} monitor takes min and/or max")
            if self.min is None and self.max is None:
                raise ValueError(f"a {self.metric} monitor needs min and/or max (e.g. max = 0.05)")
            if self.min is not None and self.max is not None and self.min > self.max:
                raise ValueError(f"min ({self.min}) is above max ({self.max})")
        return self

    @property
    def threshold(self) -> FailOn:
        return self.fail_on or "drift"

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        if self.metric == "drift":
            return f"drift vs {self.against}"
        bounds = []
        if self.min is not None:
            bounds.append(f">= {self.min:g}")
        if self.max is not None:
            bounds.append(f"<= {self.max:g}")
        return f"{self.metric} {' and '.join(bounds)}"

    def applies_to(self, available: Sequence[str]) -> list[str]:
        if "*" in self.columns:
            return list(available)
        return [c for c in self.columns if c in available]


NotifyFormat = Literal["json", "slack"]
NotifyEvent = Literal["failed", "resolved"]
#: What a ``secret_env`` may name: an environment variable name.
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_EMAIL = re.compile(r"^[^@\s,<>]+@[^@\s,<>]+$")


class NotifyTarget(BaseModel):
    """One ``[[notify]]`` table: where the server sends a monitor's failures (and resolutions)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str | None = None
    #: addresses to email (through the server's ``--smtp-url``), instead of a ``url``
    email: tuple[str, ...] | None = None
    format: NotifyFormat = "json"
    #: the environment variable holding the HMAC-SHA256 key of ``X-Songbird-Signature``
    secret_env: str | None = None
    on: tuple[NotifyEvent, ...] = ("failed",)

    @field_validator("email", mode="before")
    @classmethod
    def _addresses(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("email")
    @classmethod
    def _valid_addresses(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None:
            if not value:
                raise ValueError("email needs at least one address")
            for address in value:
                if not _EMAIL.match(address):
                    raise ValueError(f"{address[:80]!r} is not an email address (write name@example.com)")
        return value

    @model_validator(mode="after")
    def _one_destination(self) -> NotifyTarget:
        if (self.url is None) == (self.email is None):
            raise ValueError("give url (a webhook) or email (addresses), exactly one of them")
        if self.email is not None and (self.format != "json" or self.secret_env is not None):
            raise ValueError("format and secret_env are for url targets; an email target takes email and on")
        return self

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            # never echo the URL: a webhook URL is often a secret
            raise ValueError("url must be an http:// or https:// URL with a host name")
        return value

    @field_validator("secret_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError("secret_env names an environment variable (e.g. SONGBIRD_HOOK_SECRET), not the secret")
        return value

    @field_validator("on")
    @classmethod
    def _some_events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError('on needs at least one of "failed", "resolved"')
        return tuple(dict.fromkeys(value))

    def __repr__(self) -> str:  # the URL may be a secret (Slack's webhook URLs are)
        return f"NotifyTarget({self.display!r}, format={self.format!r}, on={list(self.on)!r})"

    __str__ = __repr__

    @property
    def display(self) -> str:
        """The target without its path and query (those often hold the webhook's secret)."""
        if self.url is None:
            return "mailto:" + ",".join(self.email or ())
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/…"


class MonitorsFile(BaseModel):
    """A whole monitors file: the reference to compare against, the monitors and where to notify."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    reference: str | None = None
    granularity: Granularity | None = None
    segment: str | None = None
    #: the sessions the server evaluates these monitors on; with ``datasets``, these only (default: all)
    sessions: tuple[str, ...] | None = None
    #: the organizations' datasets (``ORG/DATASET``) the server evaluates these monitors on
    datasets: tuple[str, ...] | None = None
    monitors: tuple[Monitor, ...] = Field(default=(), alias="monitor")
    notify: tuple[NotifyTarget, ...] = ()

    @field_validator("sessions", "datasets", mode="before")
    @classmethod
    def _session_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("datasets")
    @classmethod
    def _dataset_names(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        for name in value or ():
            org, sep, dataset = name.partition("/")
            if not (org and sep and dataset) or "/" in dataset:
                raise ValueError(f"{name[:80]!r} is no dataset: name datasets ORG/DATASET, e.g. org-1234/model-1")
        return value

    def applies_to_session(self, session_id: str | None) -> bool:
        """Whether the server evaluates these monitors on guest session ``session_id``."""
        return self.applies_to("session", session_id)

    def applies_to(self, kind: str, name: str | None) -> bool:
        """Whether the server evaluates these monitors on a ``"session"`` (its id) or a ``"dataset"``
        (``ORG/DATASET``): every one when the file names neither ``sessions`` nor ``datasets``, else
        those it names."""
        if self.sessions is None and self.datasets is None:
            return True
        named = self.datasets if kind == "dataset" else self.sessions
        return name in (named or ())


def _location(loc: Sequence[Any]) -> str:
    if len(loc) >= 2 and loc[0] in ("monitor", "notify") and isinstance(loc[1], int):
        rest = ".".join(str(p) for p in loc[2:] if not isinstance(p, int))
        table = "monitor" if loc[0] == "monitor" else "[[notify]] table"
        return f"{table} {loc[1] + 1}" + (f", {rest}" if rest else "")
    return ".".join(str(p) for p in loc) or "the file"


def _explain(error: Mapping[str, Any]) -> str:
    loc = tuple(error.get("loc") or ())
    field = str(loc[-1]) if loc else ""
    kind = error.get("type")
    where = _location(loc)
    given = error.get("input")
    if kind == "literal_error" and field == "metric":
        return f"{where}: unknown metric {given!r}; valid metrics: {', '.join(METRICS)}"
    if kind == "literal_error" and field == "fail_on":
        return f'{where}: unknown fail_on {given!r}; give "drift" or "possible_drift"'
    if kind == "literal_error" and field == "granularity":
        return f"{where}: unknown granularity {given!r}; give one of {', '.join(GRANULARITIES)}"
    if kind == "literal_error" and field == "against":
        return f'{where}: unknown against {given!r}; give "reference" or "previous"'
    if kind == "literal_error" and field == "format":
        return f'{where}: unknown format {given!r}; give "json" or "slack"'
    if kind == "literal_error" and loc[:1] == ("notify",) and "on" in loc:
        return f'{where}: unknown event {given!r}; on takes "failed" and/or "resolved"'
    if kind == "extra_forbidden":
        if len(loc) == 1:
            return (
                f"unknown top-level key {field!r}; valid keys: reference, granularity, segment, sessions, "
                "datasets, [[monitor]], [[notify]]"
            )
        table = _location(loc[:-1])  # the table the key is in (the key itself may hold a comma)
        if loc[0] == "notify":
            return f"{table}: unknown key {field!r}; valid keys: url, email, format, secret_env, on"
        return f"{table}: unknown key {field!r}; valid keys: name, columns, metric, fail_on, against, min, max"
    if kind == "missing":  # a [[notify]] table has no required key: its url or email is checked as a pair
        return f"{where}: missing (every monitor needs columns and metric)"
    if kind == "too_short" and field == "columns":
        return f'{where}: empty; give column names, or "*" for every column'
    message = str(error.get("msg") or "invalid").removeprefix("Value error, ")
    return f"{where}: {message}"


def parse_monitors(data: Mapping[str, Any], source: str = "monitors file") -> MonitorsFile:
    """Validate parsed TOML into a `MonitorsFile`, or raise `MonitorsError` listing every problem."""
    try:
        parsed = MonitorsFile.model_validate(dict(data))
    except ValidationError as exc:
        problems = "; ".join(_explain(e) for e in exc.errors())
        raise MonitorsError(f"{source}: {problems}") from None
    if not parsed.monitors:
        raise MonitorsError(f"{source}: no monitors; add at least one [[monitor]] table with columns and metric")
    return parsed


def load_monitors(path: Path | str) -> MonitorsFile:
    """Read and validate a monitors TOML file, or raise `MonitorsError` saying what to fix."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise MonitorsError(f"monitors file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise MonitorsError(f"monitors file {str(path)!r} cannot be read ({type(exc).__name__})") from None
    return loads_monitors(text, source=str(path))


def loads_monitors(text: str, source: str = "monitors file") -> MonitorsFile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MonitorsError(f"{source}: not valid TOML ({exc})") from None
    return parse_monitors(data, source)


# -- evaluation ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Failure:
    """One monitor that failed on one column of one bucket."""

    monitor: str
    column: str
    metric: str
    bucket_start: int
    bucket_end: int
    value: float | str | None
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "monitor": self.monitor,
            "column": self.column,
            "metric": self.metric,
            "start": self.bucket_start,
            "end": self.bucket_end,
            "value": self.value,
            "reason": self.reason,
        }


def check_columns(monitors: MonitorsFile, timeline: Mapping[str, Any]) -> None:
    """Raise `MonitorsError` naming the valid columns when a monitor names a column the timeline lacks."""
    available = list((timeline.get("columns") or {}).keys())
    for index, monitor in enumerate(monitors.monitors, start=1):
        unknown = [c for c in monitor.columns if c != "*" and c not in available]
        if unknown:
            shown = ", ".join(available[:50]) + (" …" if len(available) > 50 else "") if available else "none"
            raise MonitorsError(
                f"monitor {index} ({monitor.label}): unknown column {unknown[0]!r}; the session's columns: {shown}"
            )


def _buckets_to_check(timeline: Mapping[str, Any], which: Literal["latest", "all"]) -> list[int]:
    count = len(timeline.get("buckets") or [])
    if count == 0:
        return []
    return list(range(count)) if which == "all" else [count - 1]


_FAILING = {"drift": DRIFT_CATEGORIES[:1], "possible_drift": DRIFT_CATEGORIES[:2]}


def evaluate(
    monitors: MonitorsFile, timeline: Mapping[str, Any], which: Literal["latest", "all"] = "latest"
) -> list[Failure]:
    """Every failure of ``monitors`` on the latest bucket of ``timeline`` (or on every bucket).

    A column a bucket lacks, or a drift that cannot be computed, is not a failure; a monitor naming
    a column the session never had is an error (see :func:`check_columns`).
    """
    check_columns(monitors, timeline)
    buckets = timeline.get("buckets") or []
    columns: Mapping[str, Mapping[str, Any]] = timeline.get("columns") or {}
    failures: list[Failure] = []
    for index in _buckets_to_check(timeline, which):
        bucket = buckets[index]
        for monitor in monitors.monitors:
            for name in monitor.applies_to(list(columns)):
                failure = _evaluate_one(monitor, name, columns[name], index, bucket)
                if failure is not None:
                    failures.append(failure)
    return failures


def _at(series: Mapping[str, Any], key: str, index: int) -> Any:
    values = series.get(key)
    if not isinstance(values, list) or index >= len(values):
        return None
    return values[index]


def _evaluate_one(
    monitor: Monitor, column: str, series: Mapping[str, Any], index: int, bucket: Mapping[str, Any]
) -> Failure | None:
    def failed(value: float | str | None, reason: str) -> Failure:
        return Failure(
            monitor=monitor.label,
            column=column,
            metric=monitor.metric,
            bucket_start=int(bucket["start"]),
            bucket_end=int(bucket["end"]),
            value=value,
            reason=reason,
        )

    if monitor.metric == "drift":
        prefix = "drift" if monitor.against == "reference" else "previous_drift"
        category = _at(series, f"{prefix}_category", index)
        if category not in _FAILING[monitor.threshold]:
            return None
        p_value = _at(series, f"{prefix}_p_value", index)
        algorithm = _at(series, f"{prefix}_algorithm", index) or "drift"
        against = "the reference" if monitor.against == "reference" else "the previous bucket"
        measure = f"p = {p_value:.3g}" if isinstance(p_value, (int, float)) else "no p-value"
        return failed(category, f"{category} against {against} ({algorithm}, {measure})")
    value = _at(series, monitor.metric, index)
    if value is None:
        return None
    number = float(value)
    if monitor.min is not None and number < monitor.min:
        return failed(number, f"{monitor.metric} = {number:.6g} is below min {monitor.min:g}")
    if monitor.max is not None and number > monitor.max:
        return failed(number, f"{monitor.metric} = {number:.6g} is above max {monitor.max:g}")
    return None


__all__ = [
    "DRIFT_CATEGORIES",
    "METRICS",
    "Failure",
    "Monitor",
    "MonitorsError",
    "MonitorsFile",
    "NotifyTarget",
    "check_columns",
    "evaluate",
    "load_monitors",
    "loads_monitors",
    "parse_monitors",
]
