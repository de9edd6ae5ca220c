"""What the observatory pages show, computed from whylogs profile views: pure logic, no HTTP.

Every number comes from whylogs' own sketches: counts and types from the column metrics,
quantiles and histograms from the KLL distribution sketch (with whylogs' bin helper), distinct
counts from the HLL sketch, frequent items from the frequent-items sketch, and drift from
:func:`whylogs.viz.drift.column_drift_algorithms.calculate_drift_scores`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats as scipy_stats
from whylogs.core import DatasetProfileView
from whylogs.core.view.column_profile_view import ColumnProfileView
from whylogs.viz.configs import HistogramConfig
from whylogs.viz.drift.column_drift_algorithms import (
    KS,
    ColumnDriftAlgorithm,
    DriftAlgorithmScore,
    calculate_drift_scores,
)
from whylogs.viz.utils import _calculate_bins

from whylogs_songbird import column_stats
from whylogs_songbird.column_stats import NUMERIC_TYPES as _NUMERIC_TYPES
from whylogs_songbird.column_stats import ColumnStats, read_column
from whylogs_songbird.column_stats import finite as _finite

#: How many frequent items the summary table lists per column.
TABLE_FREQUENT_ITEMS = 5
#: How many bars a frequent-items chart shows at most.
CHART_FREQUENT_ITEMS = 20
#: Shown instead of a histogram whose bins cannot be computed in floating point (e.g. values of ±1e308).
RANGE_TOO_WIDE = "The values span a range too wide to chart."
#: A type that holds at least this share of the non-null values names the column's type.
TYPE_MAJORITY = 0.7

#: Drift categories of whylogs, most severe first.
DRIFT_CATEGORIES = ("DRIFT", "POSSIBLE_DRIFT", "NO_DRIFT")


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


def infer_type(column: ColumnProfileView) -> str:
    """The column's type from whylogs' type counters.

    ``null`` when every value was null, ``unknown`` when there are no type counters, the
    majority type when one holds at least 70% of the values, ``fractional`` when numbers
    (integral and fractional together) do, else ``mixed``.
    """
    return _type_of(read_column(column))


def _type_of(stats: ColumnStats) -> str:
    counts = stats.type_counts
    if counts is None or stats.untyped is not None:
        return stats.untyped or "unknown"
    total = stats.typed_total
    top = max(counts, key=lambda name: counts[name])
    if counts[top] / total >= TYPE_MAJORITY:
        if top == "integral" and counts["fractional"] > 0:
            return "fractional"
        return top
    numeric = counts.get("integral", 0) + counts.get("fractional", 0)
    if numeric / total >= TYPE_MAJORITY:
        return "fractional"
    return "mixed"


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
        "inferred_type": _type_of(stats),
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
    """Deserialize a stored profile (plain or segmented whylogs format), or raise `SummaryError`.
    The server calls it only in a sandbox child (``sandbox.py``), on bytes that passed the checks."""
    try:
        return DatasetProfileView.deserialize(data)
    except Exception as exc:  # whylogs raises many kinds of errors on bad bytes
        raise SummaryError(f"the stored bytes are not a readable whylogs profile ({type(exc).__name__})") from None


def merge_views(views: Sequence[DatasetProfileView]) -> DatasetProfileView:
    """One view of several (e.g. the segments of a batch) with whylogs' own merge."""
    if not views:
        raise ValueError("nothing to merge")
    merged = views[0]
    for view in views[1:]:
        merged = merged.merge(view)
    return merged


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


# -- drift -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftScore:
    """whylogs' drift verdict for one column of a target profile against a reference profile."""

    column: str
    algorithm: str
    statistic: float | None
    pvalue: float | None
    category: str | None

    @property
    def uses_pvalue(self) -> bool:
        return self.pvalue is not None

    @property
    def severity(self) -> tuple[int, float]:
        """Sort key, smallest = most drifted: category first, then p-value (or minus distance)."""
        rank = DRIFT_CATEGORIES.index(self.category) if self.category in DRIFT_CATEGORIES else len(DRIFT_CATEGORIES)
        if self.pvalue is not None:
            return rank, self.pvalue
        if self.statistic is not None:
            return rank, -self.statistic
        return rank, math.inf


class _DeferredKSScore(DriftAlgorithmScore):
    """A KS score whose p-value (and category) :meth:`_BatchedKS.settle` fills in later, in one
    scipy call for every column. It remembers the dicts whylogs makes of it, to fill those in too."""

    def __init__(self, algorithm: str, statistic: float, thresholds: Any, n_effective: float) -> None:
        super().__init__(algorithm=algorithm, statistic=statistic, thresholds=thresholds)
        self.n_effective = n_effective
        self.dicts: list[dict[str, Any]] = []

    def to_dict(self) -> dict[str, Any]:
        made: dict[str, Any] = super().to_dict()
        self.dicts.append(made)
        return made


class _BatchedKS(KS):
    """whylogs' KS test, with the CDFs of each sketch taken in one call instead of one per point,
    and the p-values of all columns in one call of scipy (see :meth:`settle`).

    whylogs' loop evaluates both CDFs at every quantile of either sketch and keeps the largest
    difference; the same points, sorted and without repeats, give the same maximum. The p-value is
    whylogs' formula, ``kstwo.sf(statistic, round(m n / (m + n)))``; one call per column costs
    more in scipy's argument handling than in the formula, so each column's score waits for
    :meth:`settle`. Anything unusual (a point that is not finite) goes through whylogs' own loop.
    """

    def __init__(self) -> None:
        super().__init__()
        self._deferred: list[_DeferredKSScore] = []

    def _compute_ks_score(
        self, target_distribution: Any, reference_distribution: Any, with_thresholds: bool = False
    ) -> Any:
        if reference_distribution.is_empty() or target_distribution.is_empty():
            return None
        quantiles = self._parameter_config.quantiles
        points = np.unique(
            np.concatenate(
                [target_distribution.get_quantiles(quantiles), reference_distribution.get_quantiles(quantiles)]
            )
        )
        if not np.all(np.isfinite(points)):
            return super()._compute_ks_score(target_distribution, reference_distribution, with_thresholds)
        split = [float(p) for p in points]
        target_cdf = np.asarray(target_distribution.get_cdf(split)[:-1])
        reference_cdf = np.asarray(reference_distribution.get_cdf(split)[:-1])
        d_max = float(np.max(np.abs(target_cdf - reference_cdf)))
        m, n = sorted([target_distribution.get_n(), reference_distribution.get_n()], reverse=True)
        thresholds = self._parameter_config.thresholds if with_thresholds else None
        score = _DeferredKSScore(self.name, d_max, thresholds, float(np.round(m * n / (m + n))))
        self._deferred.append(score)
        return score

    def settle(self) -> None:
        """Fill in the p-value and category of every deferred score (and of the dicts made of it).
        A p-value scipy cannot give is left NaN: whylogs would not have scored that column."""
        if not self._deferred:
            return
        statistics = np.array([score.statistic for score in self._deferred], dtype=float)
        sizes = np.array([score.n_effective for score in self._deferred], dtype=float)
        pvalues = np.atleast_1d(scipy_stats.distributions.kstwo.sf(statistics, sizes))
        for score, pvalue in zip(self._deferred, pvalues):
            score.pvalue = float(pvalue)
            if score.thresholds is not None and not np.isnan(pvalue):
                score.drift_category = self._get_drift_category(measure=score.pvalue)
            for made in score.dicts:
                made["pvalue"] = score.pvalue
                made["drift_category"] = score.drift_category
        self._deferred = []


def _ks_columns(target: DatasetProfileView, reference: DatasetProfileView) -> list[str]:
    """The columns whylogs' default choice scores with the KS test: both have a non-empty distribution."""
    names = []
    reference_columns = reference.get_columns()
    for name, column in target.get_columns().items():
        other = reference_columns.get(name)
        if column is None or other is None:
            continue
        mine, theirs = column.get_metric("distribution"), other.get_metric("distribution")
        if mine is None or theirs is None or mine.kll.value is None or theirs.kll.value is None:
            continue
        if not (mine.kll.value.is_empty() or theirs.kll.value.is_empty()):
            names.append(name)
    return names


def drift_scores(target: DatasetProfileView, reference: DatasetProfileView) -> dict[str, DriftScore]:
    """Drift of every column the two profiles share, with whylogs' default algorithm choice
    (KS test for distributions, chi-square for frequent items) and its thresholds.

    Columns whylogs cannot score (e.g. no shared metric) are left out. The numbers are those of
    ``calculate_drift_scores`` without a drift map: the columns it would score with the KS test
    are mapped to the KS test (so the chi-square test it also runs on them, and then drops, is
    not run) with their CDFs taken in one call (:class:`_BatchedKS`); a column the KS test cannot
    score falls back to the default choice.
    """
    ks = _BatchedKS()
    drift_map: dict[str, ColumnDriftAlgorithm] = {name: ks for name in _ks_columns(target, reference)}
    raw = calculate_drift_scores(
        target_view=target, reference_view=reference, drift_map=drift_map or None, with_thresholds=True
    )
    ks.settle()
    unscored = [name for name in drift_map if not raw.get(name) or _is_nan(raw[name].get("pvalue"))]
    if unscored:  # e.g. a p-value whylogs' KS test gives up on: the default choice decides
        fallback = calculate_drift_scores(
            target_view=_only(target, unscored), reference_view=_only(reference, unscored), with_thresholds=True
        )
        raw.update(fallback)
    scores: dict[str, DriftScore] = {}
    for column, score in raw.items():
        if not score:
            continue
        statistic = score.get("statistic")
        scores[column] = DriftScore(
            column=column,
            algorithm=str(score.get("algorithm") or "?"),
            statistic=None if statistic is None else float(statistic),
            pvalue=_finite(score.get("pvalue")),
            category=score.get("drift_category"),
        )
    return scores


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _only(view: DatasetProfileView, names: Sequence[str]) -> DatasetProfileView:
    columns = view.get_columns()
    return DatasetProfileView(
        columns={name: columns[name] for name in names if name in columns},
        dataset_timestamp=None,
        creation_timestamp=None,
    )


def most_drifted_first(scores: dict[str, DriftScore]) -> list[DriftScore]:
    """Scores sorted from most to least drifted (ties by column name)."""
    return sorted(scores.values(), key=lambda s: (s.severity, s.column))
