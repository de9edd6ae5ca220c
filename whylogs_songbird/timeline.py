"""The timeline of a session: its batch profiles merged per UTC time bucket, per-column series, and
drift of every bucket against a reference and against the previous bucket. Pure logic, no HTTP.

The steps are separate functions so that a caller can store what each one computes:

1. :func:`bucketize` groups batches (dataset timestamp, segment, identity) into UTC buckets of an
   hour, a day, an ISO week (Monday 00:00 UTC) or a calendar month; :func:`choose_granularity`
   picks the default, the coarsest granularity that gives at least :data:`MIN_POINTS` buckets;
2. :func:`~whylogs_songbird.column_stats.merge_views` merges the profiles of one bucket with
   whylogs' own (exact) merge;
3. :func:`column_points` reads one merged view into per-column numbers (count, null fraction,
   mean with a p5–p50–p95 band, distinct estimate, frequent items), all from whylogs' sketches;
4. :func:`drift_points` runs whylogs' drift calculation
   (:func:`whylogs_songbird.column_stats.drift_scores`: KS test on the distribution sketch,
   chi-square on frequent items, whylogs' thresholds) of a bucket against the reference or the
   previous bucket;
5. :func:`build_timeline` assembles the points of every bucket into the JSON document served at
   ``GET /api/v1/sessions/{session_id}/timeline`` (see ``docs/timeline.md``).

:func:`compute_timeline` chains them: in a notebook on views in memory, and on the server, which
passes it hooks that keep what it computes. Every point is plain JSON data
(:meth:`ColumnPoint.to_json` / :meth:`DriftPoint.to_json`), so the server stores it and rebuilds a
timeline without deserializing a profile again.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, cast, get_args

from whylogs.core import DatasetProfileView
from whylogs.core.view.column_profile_view import ColumnProfileView

from whylogs_songbird.column_stats import (
    DRIFT_CATEGORIES,
    ColumnStats,
    Profile,
    ProfileColumns,
    drift_scores,
    finite,
    merge_views,
    profile_columns,
    read_column,
    read_sketches,
    severity,
    type_of,
)
from whylogs_songbird.column_stats import NUMERIC_TYPES as _NUMERIC
from whylogs_songbird.models import MAX_DATASET_TIMESTAMP, MIN_DATASET_TIMESTAMP

logger = logging.getLogger("whylogs_songbird.timeline")

Granularity = Literal["hour", "day", "week", "month"]
#: From the finest to the coarsest.
GRANULARITIES: tuple[Granularity, ...] = get_args(Granularity)
#: The default granularity is the coarsest that gives at least this many buckets.
MIN_POINTS = 7
#: Frequent items kept per column and bucket.
KEPT_ITEMS = 10
#: Frequent items given a share series per column in the timeline.
SERIES_ITEMS = 5
#: The numeric series of a column, in the JSON document (each a list with one value per bucket).
NUMBER_SERIES = (
    "count",
    "null_count",
    "null_fraction",
    "mean",
    "stddev",
    "min",
    "p5",
    "p50",
    "p95",
    "max",
    "distinct",
    "top_share",
)

#: Milliseconds of an hour and of a (UTC) day.
HOUR_MS = _HOUR_MS = 3_600_000
DAY_MS = _DAY_MS = 24 * _HOUR_MS


class TimelineError(ValueError):
    """Input a timeline cannot be built from (e.g. an unknown granularity); the message says what to give."""


# -- buckets ---------------------------------------------------------------------------------


def parse_granularity(value: str | None) -> Granularity | None:
    """``hour``/``day``/``week``/``month`` (any case), None for no value, else `TimelineError`."""
    if value is None or value == "":
        return None
    lowered = value.strip().lower()
    for granularity in GRANULARITIES:
        if granularity == lowered:
            return granularity
    raise TimelineError(f"unknown granularity {value[:40]!r}: give one of {', '.join(GRANULARITIES)}")


def civil_date(days: int) -> tuple[int, int, int]:
    """``(year, month, day)`` of the proleptic Gregorian date ``days`` days after 1970-01-01, for any
    integer (years 0, negative or past 9999 too, where ``datetime`` gives up)."""
    shifted = days + 719_468  # days since 0000-03-01: leap days then fall at the end of a year
    era, day_of_era = divmod(shifted, 146_097)
    year_of_era = (day_of_era - day_of_era // 1460 + day_of_era // 36_524 - day_of_era // 146_096) // 365
    day_of_year = day_of_era - (365 * year_of_era + year_of_era // 4 - year_of_era // 100)
    month_index = (5 * day_of_year + 2) // 153  # 0 is March
    day = day_of_year - (153 * month_index + 2) // 5 + 1
    month = month_index + 3 if month_index < 10 else month_index - 9
    return year_of_era + era * 400 + (month <= 2), month, day


def civil_days(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a proleptic Gregorian date (the inverse of :func:`civil_date`)."""
    year -= month <= 2
    era, year_of_era = divmod(year, 400)
    day_of_year = (153 * (month - 3 if month > 2 else month + 9) + 2) // 5 + day - 1
    return era * 146_097 + year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year - 719_468


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MILLIS = re.compile(r"-?[0-9]{1,16}")


def parse_time_bound(value: str | None, name: str = "start") -> int | None:
    """A ``start``/``end`` parameter in epoch milliseconds, None for no value, else `TimelineError`.

    Takes epoch milliseconds, or an ISO 8601 date or date-time (UTC unless it gives an offset:
    ``2024-05-01``, ``2024-05-01T12:00``, ``2024-05-01T12:00:00+02:00``, ``…Z``), in years 1 to 9999.
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if _MILLIS.fullmatch(text):
        millis = int(text)
    else:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise TimelineError(
                f"{name}={value[:40]!r} is not a time: give epoch milliseconds or an ISO 8601 date or "
                "date-time (UTC unless it has an offset), e.g. 2024-05-01 or 2024-05-01T12:00Z"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        millis = (moment - _EPOCH) // timedelta(milliseconds=1)
    if not MIN_DATASET_TIMESTAMP <= millis <= MAX_DATASET_TIMESTAMP + 1:
        raise TimelineError(f"{name}={value[:40]!r} is outside years 1 to 9999: give a time in that range")
    return millis


def utc_text(timestamp_ms: int) -> str:
    """``YYYY-MM-DD HH:MM UTC`` of any epoch-millisecond integer (never raises)."""
    year, month, day = civil_date(timestamp_ms // _DAY_MS)
    minutes = timestamp_ms % _DAY_MS // 60_000
    return f"{year:04d}-{month:02d}-{day:02d} {minutes // 60:02d}:{minutes % 60:02d} UTC"


def bucket_bounds(timestamp_ms: int, granularity: Granularity) -> tuple[int, int]:
    """``[start, end)`` in epoch milliseconds of the UTC bucket holding ``timestamp_ms``.

    Integer arithmetic only, so any stored timestamp has a bucket (even one outside the years 1 to
    9999 that slots accept now)."""
    if granularity == "hour":
        start = timestamp_ms - timestamp_ms % _HOUR_MS
        return start, start + _HOUR_MS
    day = timestamp_ms // _DAY_MS
    if granularity == "day":
        return day * _DAY_MS, (day + 1) * _DAY_MS
    if granularity == "week":
        monday = day - (day + 3) % 7  # 1970-01-01 was a Thursday
        return monday * _DAY_MS, (monday + 7) * _DAY_MS
    if granularity == "month":
        year, month, _ = civil_date(day)
        following = (year + 1, 1) if month == 12 else (year, month + 1)
        return civil_days(year, month, 1) * _DAY_MS, civil_days(*following, 1) * _DAY_MS
    raise TimelineError(f"unknown granularity {granularity!r}: give one of {', '.join(GRANULARITIES)}")


def choose_granularity(timestamps: Iterable[int], min_points: int = MIN_POINTS) -> Granularity:
    """The coarsest granularity that gives at least ``min_points`` buckets; when none does, the
    coarsest that gives as many buckets as hourly ones (e.g. ``day`` for three daily batches)."""
    stamps = set(timestamps)
    if not stamps:
        return "day"
    counts = {g: len({bucket_bounds(t, g)[0] for t in stamps}) for g in GRANULARITIES}
    for granularity in reversed(GRANULARITIES):
        if counts[granularity] >= min_points:
            return granularity
    most = counts["hour"]
    for granularity in reversed(GRANULARITIES):
        if counts[granularity] == most:
            return granularity
    return "hour"  # pragma: no cover - the loop always finds "hour"


@dataclass(frozen=True)
class Batch:
    """One stored batch profile: ``key`` identifies its stored bytes (a new upload gets a new key)."""

    key: str
    timestamp: int
    segment: str = ""


@dataclass(frozen=True)
class Bucket:
    """The batches of one time bucket ``[start, end)``, in time order (then by key): the order they are
    merged in, which matters for the distinct-count sketch, whose merged estimate depends on it slightly."""

    start: int
    end: int
    batches: tuple[Batch, ...]

    @property
    def profiles(self) -> int:
        return len(self.batches)

    @functools.cached_property
    def key(self) -> str:
        """Identifies the bucket's content: changes when a batch is added, removed or replaced (a
        digest of its batches' keys, made once per bucket: a view asks for it many times)."""
        return content_key(b.key for b in self.batches)

    @functools.cached_property
    def timestamps(self) -> tuple[int, ...]:
        """The distinct timestamps of its batches, oldest first (made once per bucket)."""
        return tuple(dict.fromkeys(b.timestamp for b in self.batches))


def content_key(parts: Iterable[str]) -> str:
    """A short stable digest of a set of identities (order does not matter)."""
    digest = hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()
    return digest[:32]


def bucketize(batches: Iterable[Batch], granularity: Granularity, segment: str | None = None) -> list[Bucket]:
    """The non-empty buckets of ``batches`` (only those of ``segment`` when given), oldest first.

    Empty buckets are left out: a series has a point where there is data, and "previous bucket"
    means the previous bucket that has data.
    """
    grouped: dict[tuple[int, int], list[Batch]] = {}
    for batch in batches:
        if segment is not None and batch.segment != segment:
            continue
        grouped.setdefault(bucket_bounds(batch.timestamp, granularity), []).append(batch)
    return [
        Bucket(start=start, end=end, batches=tuple(sorted(found, key=lambda b: (b.timestamp, b.key))))
        for (start, end), found in sorted(grouped.items())
    ]


# -- per-column points -----------------------------------------------------------------------


def _finite(value: Any, digits: int = 12) -> float | None:
    """A plain float rounded to ``digits`` significant digits (what JSON carries), or None for
    missing, NaN and infinite values."""
    number = finite(value)
    return None if number is None else float(f"{number:.{digits}g}")


@dataclass(frozen=True)
class ColumnPoint:
    """The numbers of one column in one bucket; None where the profile has no such metric."""

    inferred_type: str = "unknown"
    count: int | None = None
    null_count: int | None = None
    mean: float | None = None
    stddev: float | None = None
    min: float | None = None
    p5: float | None = None
    p50: float | None = None
    p95: float | None = None
    max: float | None = None
    distinct: float | None = None
    #: (value, estimated count) of the most frequent items, most frequent first.
    top_items: tuple[tuple[str, float], ...] = ()

    @property
    def non_null(self) -> int | None:
        if self.count is None:
            return None
        return self.count - (self.null_count or 0)

    @property
    def top_share(self) -> float | None:
        """Share of the non-null values held by the most frequent item (categorical columns)."""
        return _rounded(self.item_share(self.top_items[0][0])) if self.top_items else None

    @property
    def null_fraction(self) -> float | None:
        if self.count is None or self.null_count is None or self.count == 0:
            return None
        return self.null_count / self.count

    def item_share(self, value: str) -> float | None:
        if not self.top_items:
            return None
        total = self.non_null
        if not total:
            return None
        estimate = dict(self.top_items).get(value, 0.0)
        return min(1.0, estimate / total)

    def value(self, name: str) -> float | None:
        """The value of one of :data:`NUMBER_SERIES`."""
        if name not in NUMBER_SERIES:
            raise KeyError(name)
        return cast("float | None", getattr(self, name))

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.inferred_type,
            "count": self.count,
            "null_count": self.null_count,
            "mean": self.mean,
            "stddev": self.stddev,
            "min": self.min,
            "p5": self.p5,
            "p50": self.p50,
            "p95": self.p95,
            "max": self.max,
            "distinct": self.distinct,
            "top_items": [[value, estimate] for value, estimate in self.top_items],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ColumnPoint:
        return cls(
            inferred_type=str(data.get("type") or "unknown"),
            count=data.get("count"),
            null_count=data.get("null_count"),
            mean=data.get("mean"),
            stddev=data.get("stddev"),
            min=data.get("min"),
            p5=data.get("p5"),
            p50=data.get("p50"),
            p95=data.get("p95"),
            max=data.get("max"),
            distinct=data.get("distinct"),
            top_items=tuple((str(v), float(e)) for v, e in data.get("top_items") or ()),
        )


#: The quantiles of a column's p5-p50-p95 band.
BAND_QUANTILES = (0.05, 0.5, 0.95)


def column_point(column: ColumnProfileView) -> ColumnPoint:
    """The numbers of one column of a (merged) view, from whylogs' metrics."""
    return _point(read_column(column, BAND_QUANTILES))


def _point(stats: ColumnStats) -> ColumnPoint:
    values: dict[str, Any] = {
        "inferred_type": type_of(stats),
        "count": stats.count,
        "null_count": stats.null_count,
        "distinct": _finite(stats.distinct),
    }
    if stats.has_distribution:
        p5, p50, p95 = stats.quantiles
        values.update(
            mean=_finite(stats.mean),
            stddev=_finite(stats.stddev),
            min=_finite(stats.min),
            p5=_finite(p5),
            p50=_finite(p50),
            p95=_finite(p95),
            max=_finite(stats.max),
        )
    if values["inferred_type"] not in _NUMERIC:
        values["top_items"] = stats.frequent_items[:KEPT_ITEMS]
    return ColumnPoint(**values)


def column_points(view: Profile) -> dict[str, ColumnPoint]:
    """The numbers of every column of a (merged) bucket view, in the view's column order."""
    return {
        name: _point(read_sketches(column, BAND_QUANTILES)) for name, column in profile_columns(view).columns.items()
    }


# -- drift -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftPoint:
    """whylogs' drift verdict for one column of a bucket against another profile."""

    category: str | None
    p_value: float | None
    statistic: float | None
    algorithm: str

    def to_json(self) -> list[Any]:
        return [self.category, self.p_value, self.statistic, self.algorithm]

    @classmethod
    def from_json(cls, data: Sequence[Any]) -> DriftPoint:
        category, p_value, statistic, algorithm = data
        return cls(category=category, p_value=p_value, statistic=statistic, algorithm=str(algorithm))


def drift_points(target: Profile, reference: Profile) -> dict[str, DriftPoint]:
    """Drift of every column the two views share, with whylogs' default algorithm choice and thresholds.

    Columns whylogs cannot score (no shared distribution or frequent items) are left out.
    """
    return {
        column: DriftPoint(
            category=score.category if score.category in DRIFT_CATEGORIES else None,
            p_value=_finite(score.pvalue),
            statistic=_finite(score.statistic),
            algorithm=score.algorithm,
        )
        for column, score in drift_scores(target, reference).items()
    }


# -- one bucket, and the whole timeline ------------------------------------------------------


@dataclass(frozen=True)
class BucketPoints:
    """Everything the timeline shows of one bucket."""

    start: int
    end: int
    profiles: int
    columns: Mapping[str, ColumnPoint]
    #: against the reference; None when there is no reference
    drift: Mapping[str, DriftPoint] | None = None
    #: against the previous bucket; None for the first bucket
    previous_drift: Mapping[str, DriftPoint] | None = None


@dataclass(frozen=True)
class ReferenceInfo:
    id: str
    alias: str | None = None
    timestamp: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "alias": self.alias, "timestamp": self.timestamp}


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def build_timeline(
    granularity: Granularity,
    points: Sequence[BucketPoints],
    *,
    reference: ReferenceInfo | None = None,
    segment: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The timeline document (see ``docs/timeline.md``)::

        {"granularity": "day", "reference": {"id", "alias", "timestamp"} | null, "segment": null | "k=v",
         "buckets": [{"start": ms, "end": ms, "profiles": n}],
         "columns": {name: {"type", "count": [...], "null_fraction": [...], "mean": [...], "p5", "p50",
                            "p95", "distinct", "top_share", "top_items": {value: [share...]},
                            "drift_category": [...], "drift_p_value": [...], "drift_statistic": [...],
                            "drift_algorithm": [...], "previous_drift_category": [...],
                            "previous_drift_p_value": [...], "worst_drift": category | null}},
         "column_order": [names, most drifted first]}

    Every list has one entry per bucket; ``null`` where a bucket lacks the column or has nothing to
    compare with.
    """
    names: list[str] = []
    seen: set[str] = set()
    for bucket in points:
        for name in bucket.columns:
            if name not in seen:
                seen.add(name)
                names.append(name)
    columns: dict[str, dict[str, Any]] = {}
    for name in names:
        found = [bucket.columns.get(name) for bucket in points]
        types = [p.inferred_type for p in found if p is not None and p.inferred_type not in ("null", "unknown")]
        series: dict[str, Any] = {"type": max(set(types), key=types.count) if types else "unknown"}
        for stat in NUMBER_SERIES:
            series[stat] = [None if p is None else getattr(p, stat) for p in found]
        totals: dict[str, float] = {}
        for p in found:
            for value, estimate in p.top_items if p is not None else ():
                totals[value] = totals.get(value, 0.0) + estimate
        top = sorted(totals, key=lambda v: (-totals[v], v))[:SERIES_ITEMS]
        series["top_items"] = {v: [None if p is None else _rounded(p.item_share(v)) for p in found] for v in top}
        for prefix, attribute in (("drift", "drift"), ("previous_drift", "previous_drift")):
            scored: list[DriftPoint | None] = []
            for bucket in points:
                mapping = getattr(bucket, attribute)
                scored.append(None if mapping is None else mapping.get(name))
            series[f"{prefix}_category"] = [None if d is None else d.category for d in scored]
            series[f"{prefix}_p_value"] = [None if d is None else d.p_value for d in scored]
            series[f"{prefix}_statistic"] = [None if d is None else d.statistic for d in scored]
            series[f"{prefix}_algorithm"] = [None if d is None else d.algorithm for d in scored]
        worst = min(severity(c) for c in series["drift_category"]) if points else len(DRIFT_CATEGORIES)
        series["worst_drift"] = DRIFT_CATEGORIES[worst] if worst < len(DRIFT_CATEGORIES) else None
        columns[name] = series
    document: dict[str, Any] = {
        "granularity": granularity,
        "reference": reference.to_json() if reference is not None else None,
        "segment": segment,
        "buckets": [{"start": b.start, "end": b.end, "profiles": b.profiles} for b in points],
        "columns": columns,
        "column_order": drift_order(columns),
    }
    if extra:
        document.update(extra)
    return document


def drift_order(columns: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Column names, most drifted first: by the number of DRIFT buckets, then POSSIBLE_DRIFT buckets,
    then the smallest p-value; ties keep the profile's column order."""

    def rank(item: tuple[int, str]) -> tuple[int, int, float, int]:
        index, name = item
        series = columns[name]
        categories = series.get("drift_category") or []
        p_values = [p for p in series.get("drift_p_value") or [] if p is not None]
        return (
            -sum(1 for c in categories if c == "DRIFT"),
            -sum(1 for c in categories if c == "POSSIBLE_DRIFT"),
            min(p_values) if p_values else math.inf,
            index,
        )

    return [name for _, name in sorted(enumerate(columns), key=rank)]


ViewLoader = Callable[[Batch], DatasetProfileView]
#: ``cached(key, compute)``: the JSON value kept under ``key``, else ``compute()`` (then kept). A key
#: names everything its value depends on: ``points/<bucket key>`` for a bucket's column points,
#: ``drift/<bucket key>/<other key>`` for its drift against the reference or the previous bucket.
CachedJson = Callable[[str, Callable[[], Any]], Any]
#: ``memo(key, compute)``: a bucket's points kept in memory, under (bucket key, reference key,
#: previous bucket's key), else ``compute()``.
Memo = Callable[[tuple[str, str, str], Callable[[], "BucketPoints"]], "BucketPoints"]


@dataclass
class TimelineInputs:
    """What :func:`compute_timeline` needs: the batches, a loader of their views, and the reference."""

    batches: Sequence[Batch]
    load: ViewLoader
    #: The reference view, or a function that loads it (called only when a drift is computed).
    reference: DatasetProfileView | Callable[[], DatasetProfileView] | None = None
    reference_info: ReferenceInfo | None = None
    granularity: Granularity | None = None
    segment: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    #: Identifies the reference's content in the keys of :data:`CachedJson` and :data:`Memo`.
    reference_key: str = ""
    #: The merged view of one bucket (or its columns' sketches), when the caller keeps them (the
    #: server's rollups); by default its batches are loaded and merged in order.
    merged: Callable[[Bucket], Profile] | None = None
    #: The buckets, when the caller has them already (``bucketize(batches, granularity, segment)``, as
    #: the server keeps them between views): then ``batches`` is not read.
    buckets: Sequence[Bucket] | None = None


def _compute(key: str, compute: Callable[[], Any]) -> Any:
    return compute()


def _bucket_points(
    bucket: Bucket,
    view: Callable[[], Profile],
    reference: Callable[[], Profile] | None,
    previous: Callable[[], Profile] | None,
    *,
    cached: CachedJson = _compute,
    reference_key: str = "",
    previous_key: str = "",
) -> BucketPoints:
    """A bucket's points, each part read back from ``cached`` or computed from views loaded only then."""

    def drift(other: Callable[[], Profile]) -> dict[str, Any]:
        return {n: d.to_json() for n, d in drift_points(view(), other()).items()}

    columns = cached(f"points/{bucket.key}", lambda: {n: p.to_json() for n, p in column_points(view()).items()})
    against_reference = (
        None if reference is None else cached(f"drift/{bucket.key}/{reference_key}", lambda: drift(reference))
    )
    against_previous = (
        None if previous is None else cached(f"drift/{bucket.key}/{previous_key}", lambda: drift(previous))
    )
    return BucketPoints(
        start=bucket.start,
        end=bucket.end,
        profiles=bucket.profiles,
        columns={n: ColumnPoint.from_json(v) for n, v in columns.items()},
        drift=None if against_reference is None else {n: DriftPoint.from_json(v) for n, v in against_reference.items()},
        previous_drift=None
        if against_previous is None
        else {n: DriftPoint.from_json(v) for n, v in against_previous.items()},
    )


def bucket_points(
    bucket: Bucket,
    view: Profile,
    reference: Profile | None,
    previous: Profile | None,
) -> BucketPoints:
    """The points of one bucket from its merged view, the reference view and the previous bucket's view."""
    return _bucket_points(
        bucket,
        lambda: view,
        None if reference is None else lambda: reference,
        None if previous is None else lambda: previous,
    )


class _BucketViews:
    """The merged views of the last few buckets asked for, each merged once and read as its columns'
    sketches once (so a bucket compared twice is the same sketches, whose quantiles are taken once)."""

    def __init__(self, load: ViewLoader, keep: int = 3, merged: Callable[[Bucket], Profile] | None = None) -> None:
        self.load = load
        self.keep = keep
        self.merged = merged
        self._views: dict[str, ProfileColumns] = {}

    def get(self, bucket: Bucket) -> ProfileColumns:
        view = self._views.pop(bucket.key, None)
        if view is None:
            if self.merged is not None:
                view = profile_columns(self.merged(bucket))
            else:
                view = profile_columns(merge_views([self.load(b) for b in bucket.batches]))
        self._views[bucket.key] = view  # most recent last
        while len(self._views) > self.keep:
            del self._views[next(iter(self._views))]
        return view


def _loaded_once(
    given: DatasetProfileView | Callable[[], DatasetProfileView] | None,
) -> Callable[[], ProfileColumns] | None:
    if given is None:
        return None
    if callable(given):
        load = given
        return functools.cache(lambda: profile_columns(load()))
    columns = profile_columns(given)
    return lambda: columns


def compute_timeline(
    inputs: TimelineInputs, *, cached: CachedJson | None = None, memo: Memo | None = None
) -> dict[str, Any]:
    """The timeline document of ``inputs``.

    Without ``cached`` and ``memo`` everything is computed. The server passes both: ``cached``
    keeps every bucket's points and drifts (see :data:`CachedJson`), so that a view loads and
    merges the profiles of only the buckets whose batches changed; ``memo`` keeps them parsed.
    """
    given = inputs.buckets
    stamps = (b.timestamp for b in inputs.batches) if given is None else (b.timestamp for k in given for b in k.batches)
    granularity = inputs.granularity or choose_granularity(stamps)
    buckets = bucketize(inputs.batches, granularity, inputs.segment) if given is None else given
    views = _BucketViews(inputs.load, merged=inputs.merged)
    reference = _loaded_once(inputs.reference)
    points: list[BucketPoints] = []
    previous: Bucket | None = None
    for bucket in buckets:
        compute = functools.partial(
            _bucket_points,
            bucket,
            functools.partial(views.get, bucket),
            reference,
            None if previous is None else functools.partial(views.get, previous),
            cached=cached or _compute,
            reference_key=inputs.reference_key,
            previous_key="" if previous is None else previous.key,
        )
        if memo is None:
            points.append(compute())
        else:
            keys = (bucket.key, inputs.reference_key if reference else "", previous.key if previous else "")
            points.append(memo(keys, compute))
        previous = bucket
    return build_timeline(
        granularity, points, reference=inputs.reference_info, segment=inputs.segment, extra=inputs.extra
    )


def _pandas_time(pd: Any, timestamp_ms: int) -> Any:
    """A UTC pandas timestamp, or ``NaT`` for one outside what pandas can hold (about 1677-2262)."""
    try:
        return pd.Timestamp(timestamp_ms, unit="ms", tz="UTC")
    except (OverflowError, ValueError):  # pandas' OutOfBoundsDatetime is a ValueError
        return pd.NaT


def timeline_frame(document: Mapping[str, Any]) -> Any:
    """The timeline document as a pandas DataFrame: one row per (bucket, column), with the bucket's
    ``start``/``end`` as UTC timestamps, ``profiles``, every number series and the drift columns."""
    import pandas as pd

    buckets = document.get("buckets") or []
    rows: list[dict[str, Any]] = []
    keys = [*NUMBER_SERIES, "drift_category", "drift_p_value", "drift_statistic", "drift_algorithm"]
    keys += ["previous_drift_category", "previous_drift_p_value"]
    for name, series in (document.get("columns") or {}).items():
        for index, bucket in enumerate(buckets):
            row: dict[str, Any] = {
                "start": _pandas_time(pd, bucket["start"]),
                "end": _pandas_time(pd, bucket["end"]),
                "profiles": bucket["profiles"],
                "column": name,
            }
            for key in keys:
                values = series.get(key)
                row[key] = values[index] if values is not None and index < len(values) else None
            rows.append(row)
    columns = ["start", "end", "profiles", "column", *keys]
    return pd.DataFrame(rows, columns=columns)


__all__ = [
    "DAY_MS",
    "DRIFT_CATEGORIES",
    "GRANULARITIES",
    "HOUR_MS",
    "MIN_POINTS",
    "NUMBER_SERIES",
    "Batch",
    "Bucket",
    "BucketPoints",
    "ColumnPoint",
    "DriftPoint",
    "Granularity",
    "ReferenceInfo",
    "TimelineError",
    "TimelineInputs",
    "bucket_bounds",
    "bucket_points",
    "bucketize",
    "civil_date",
    "civil_days",
    "build_timeline",
    "choose_granularity",
    "column_point",
    "column_points",
    "compute_timeline",
    "content_key",
    "drift_order",
    "drift_points",
    "merge_views",
    "parse_granularity",
    "parse_time_bound",
    "severity",
    "timeline_frame",
    "utc_text",
]
