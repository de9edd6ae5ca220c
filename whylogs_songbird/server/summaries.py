"""What the observatory pages show, computed from whylogs profile views: pure logic, no HTTP.

Every number comes from whylogs' own sketches: counts and types from the column metrics,
quantiles and histograms from the KLL distribution sketch (with whylogs' bin helper), distinct
counts from the HLL sketch, frequent items from the frequent-items sketch. What a column means
(its type, merging, drift) is :mod:`whylogs_songbird.column_stats`, shared with the timeline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from whylogs.core import DatasetProfileView
from whylogs.core.view.column_profile_view import ColumnProfileView

from whylogs_songbird import column_stats
from whylogs_songbird.column_stats import NUMERIC_TYPES as _NUMERIC_TYPES
from whylogs_songbird.column_stats import read_column, type_of

#: How many frequent items the summary table lists per column.
TABLE_FREQUENT_ITEMS = 5
#: How many bars a frequent-items chart shows at most.
CHART_FREQUENT_ITEMS = 20
#: Shown instead of a histogram whose bins cannot be computed in floating point (e.g. values of ±1e308).
RANGE_TOO_WIDE = "The values span a range too wide to chart."


class SummaryError(Exception):
    """A profile could not be read or summarized."""


# -- per-column summaries --------------------------------------------------------------------


@dataclass(frozen=True)
class FrequentItem:
    value: str
    estimate: float


@dataclass(frozen=True)
class ColumnSummary:
    """The statistics of one column of one profile; None where the profile has no such metric."""

    name: str
    inferred_type: str
    count: int | None = None
    null_count: int | None = None
    distinct: float | None = None
    mean: float | None = None
    stddev: float | None = None
    min: float | None = None
    p25: float | None = None
    median: float | None = None
    p75: float | None = None
    max: float | None = None
    frequent_items: tuple[FrequentItem, ...] = ()
    #: Whether the column has a non-empty distribution sketch (so a histogram can be drawn).
    has_distribution: bool = False

    @property
    def null_fraction(self) -> float | None:
        if self.count is None or self.null_count is None or self.count == 0:
            return None
        return self.null_count / self.count

    @property
    def is_numeric(self) -> bool:
        """Numeric columns get a histogram; the others a bar chart of their frequent items."""
        return self.has_distribution and self.inferred_type in _NUMERIC_TYPES

    @property
    def chart_kind(self) -> str | None:
        if self.is_numeric:
            return "histogram"
        if self.frequent_items:
            return "bar"
        if self.has_distribution:
            return "histogram"
        return None


@dataclass(frozen=True)
class ProfileSummary:
    """Per-column summaries of one profile, in the profile's column order."""

    columns: dict[str, ColumnSummary] = field(default_factory=dict)

    @property
    def column_count(self) -> int:
        return len(self.columns)

    @property
    def row_count(self) -> int:
        """Rows logged: the largest column count (whylogs keeps no dataset-level row count)."""
        return max((c.count or 0 for c in self.columns.values()), default=0)


def frequent_items(column: ColumnProfileView, limit: int | None = None) -> tuple[FrequentItem, ...]:
    """The column's most frequent items (whylogs' no-false-positives estimate), most frequent first."""
    return _items(column_stats.frequent_items(column), limit)


def _items(found: Sequence[tuple[str, float]], limit: int | None) -> tuple[FrequentItem, ...]:
    kept = found[:limit] if limit is not None else found
    return tuple(FrequentItem(value=value, estimate=estimate) for value, estimate in kept)


def summarize_column(name: str, column: ColumnProfileView) -> ColumnSummary:
    """The summary statistics of one column."""
    stats = read_column(column, (0.25, 0.5, 0.75))
    values: dict[str, Any] = {
        "name": name,
        "inferred_type": type_of(stats),
        "count": stats.count,
        "null_count": stats.null_count,
        "distinct": stats.distinct,
        "frequent_items": _items(stats.frequent_items, CHART_FREQUENT_ITEMS),
    }
    if stats.has_distribution:
        p25, median, p75 = stats.quantiles
        values.update(
            has_distribution=True,
            mean=stats.mean,
            stddev=stats.stddev,
            min=stats.min,
            p25=p25,
            median=median,
            p75=p75,
            max=stats.max,
        )
    return ColumnSummary(**values)


def summarize_profile(view: DatasetProfileView) -> ProfileSummary:
    """Summaries of every column of a profile view."""
    return ProfileSummary(
        columns={name: summarize_column(name, column) for name, column in view.get_columns().items() if column}
    )


def read_view(data: bytes) -> DatasetProfileView:
    """Deserialize a stored profile (plain or segmented whylogs format, or a v0 profile through
    whylogs' own v0 reader), or raise `SummaryError`. The server calls it only in a sandbox child
    (``sandbox.py``), on bytes that passed the checks."""
    try:
        if data[:4] != b"WHY1":
            return _read_v0(data)
        return DatasetProfileView.deserialize(data)
    except Exception as exc:  # whylogs raises many kinds of errors on bad bytes
        raise SummaryError(f"the stored bytes are not a readable whylogs profile ({type(exc).__name__})") from None


def _read_v0(data: bytes) -> DatasetProfileView:
    """A v0 ``DatasetProfileMessage`` as whylogs' migration reads it, without its model-performance
    metrics (their sketches are not checked, and no page shows them)."""
    import io

    from whylogs.core.proto.v0 import DatasetProfileMessageV0
    from whylogs.core.utils import read_delimited_protobuf
    from whylogs.migration.converters import v0_to_v1_view

    message = read_delimited_protobuf(io.BytesIO(data), DatasetProfileMessageV0)
    if message is None:
        raise ValueError("no v0 message")
    message.ClearField("modeProfile")
    return v0_to_v1_view(message)


# -- charts ----------------------------------------------------------------------------------


def _sketch(column: ColumnProfileView | None) -> Any | None:
    if column is None:
        return None
    distribution = column.get_metric("distribution")
    if distribution is None or distribution.kll.value is None or distribution.kll.value.is_empty():
        return None
    return distribution.kll.value


def histogram(columns: Sequence[ColumnProfileView | None]) -> dict[str, Any] | None:
    """Histogram counts of one column in each profile, on shared bins so that they overlay.

    Bins come from whylogs' ``_calculate_bins`` over the range of all profiles and counts from
    each KLL sketch's PMF, as whylogs' own profile visualizer does for one profile. Returns
    ``{"edges": [...], "counts": [[...] or None per profile]}``, ``{"note": RANGE_TOO_WIDE}`` when
    the span of the values or a bin edge is not a finite float (no bins can be drawn), or None
    when no profile has a distribution for the column.
    """
    sketches = [_sketch(column) for column in columns]
    present = [s for s in sketches if s is not None]
    if not present:
        return None
    start = min(s.get_min_value() for s in present)
    end = max(s.get_max_value() for s in present)
    total = sum(s.get_n() for s in present)
    if not (math.isfinite(start) and math.isfinite(end)):
        return None
    if total < 2 or start == end:
        width = abs(start) * 1e-7 or 1e-7
        edges = [start - width / 2, start + width / 2]
        if not _drawable(edges):
            return {"note": RANGE_TOO_WIDE}
        counts = [[int(s.get_n())] if s is not None else None for s in sketches]
        return {"edges": edges, "counts": counts}
    # whylogs pads the right edge by 1e-7 of its magnitude: that, or the span, may overflow
    if not (math.isfinite(end - start) and math.isfinite(end + abs(end) * 1e-7)):
        return {"note": RANGE_TOO_WIDE}
    # whylogs.viz imports scipy.stats (most of a second): only when a histogram is drawn
    from whylogs.viz.configs import HistogramConfig
    from whylogs.viz.utils import _calculate_bins

    config = HistogramConfig()
    try:
        edges, _ = _calculate_bins(
            end, start, total, config.hist_avg_number_per_bucket, config.max_hist_buckets, config.min_n_buckets
        )
    except (ArithmeticError, ValueError):
        return {"note": RANGE_TOO_WIDE}
    if not _drawable(edges):
        return {"note": RANGE_TOO_WIDE}
    all_counts: list[list[int] | None] = []
    for sketch in sketches:
        if sketch is None:
            all_counts.append(None)
            continue
        n = sketch.get_n()
        pmf = sketch.get_pmf(edges)  # masses below, inside each bin, and above the edges
        all_counts.append([int(round(p * n)) for p in pmf[1:-1]])
    return {"edges": [float(e) for e in edges], "counts": all_counts}


def _drawable(edges: Sequence[float]) -> bool:
    """Whether histogram ``edges`` are finite and strictly increasing (what a KLL PMF needs)."""
    return all(math.isfinite(e) for e in edges) and all(a < b for a, b in zip(edges, edges[1:]))


def frequent_items_chart(summaries: Sequence[ColumnSummary | None]) -> dict[str, Any] | None:
    """Bar-chart data of a categorical column: the union of each profile's top items.

    Returns ``{"labels": [...], "counts": [[...] or None per profile]}``, most frequent first
    (by the largest estimate in any profile), or None when no profile has frequent items.
    """
    present = [s for s in summaries if s is not None and s.frequent_items]
    if not present:
        return None
    best: dict[str, float] = {}
    for found in present:
        for item in found.frequent_items:
            best[item.value] = max(best.get(item.value, 0.0), item.estimate)
    labels = sorted(best, key=lambda value: (-best[value], value))[:CHART_FREQUENT_ITEMS]
    counts: list[list[float] | None] = []
    for summary in summaries:
        if summary is None or not summary.frequent_items:
            counts.append(None)
            continue
        estimates = {item.value: item.estimate for item in summary.frequent_items}
        counts.append([estimates.get(label, 0.0) for label in labels])
    return {"labels": labels, "counts": counts}


def chart_data(
    name: str, views: Sequence[DatasetProfileView], summaries: Sequence[ProfileSummary]
) -> dict[str, Any] | None:
    """The chart of one column across profiles: ``{"kind": "histogram"|"bar", ...}``,
    ``{"kind": "note", "note": ...}`` when it cannot be drawn, or None when there is nothing to chart."""
    column_summaries = [s.columns.get(name) for s in summaries]
    present = [s for s in column_summaries if s is not None]
    wants_histogram = any(s.is_numeric for s in present)
    if wants_histogram or not any(s.frequent_items for s in present):
        data = histogram([v.get_column(name) for v in views])
        if data is not None:
            return {"kind": "note" if "note" in data else "histogram", **data}
    bars = frequent_items_chart(column_summaries)
    if bars is not None:
        return {"kind": "bar", **bars}
    return None
