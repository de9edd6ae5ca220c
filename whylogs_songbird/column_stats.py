"""What a column of a whylogs profile means, in one place: pure logic, no HTTP.

The observatory pages (``whylogs_songbird.server.summaries``), the session timeline
(:mod:`whylogs_songbird.timeline`) and the monitors (:mod:`whylogs_songbird.monitors`) all show
and judge columns; everything they must agree on is here:

- :func:`read_column` reads a column's numbers from whylogs' metrics once: the type counters,
  counts and nulls, the HLL distinct estimate, the KLL distribution (mean, standard deviation,
  range and the quantiles a caller asks for) and the frequent items. Every number is a finite
  float or None;
- :func:`type_of` / :func:`infer_type`: the one rule naming a column's type (see there);
- :func:`merge_views`: several profiles as one, with whylogs' own merge;
- :data:`DRIFT_CATEGORIES`, :func:`severity` and :func:`drift_scores`: whylogs' drift verdicts of
  every column of a profile against another, with the KS p-values of all columns in one call of
  :func:`ks_pvalues` (whylogs' p-value, evaluated fast: see there for the one difference).
"""

from __future__ import annotations

import functools
import math
import operator
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeAlias

import numpy as np
from whylogs.core import DatasetProfileView
from whylogs.core.configs import SummaryConfig
from whylogs.core.view.column_profile_view import ColumnProfileView

#: The type counters of whylogs' ``types`` metric.
TYPE_NAMES = ("integral", "fractional", "boolean", "string", "object", "tensor")
#: The types whose columns get a distribution chart or a numeric series.
NUMERIC_TYPES = ("integral", "fractional")
#: A type that holds at least this share of the typed (non-null) values names the column's type.
TYPE_MAJORITY = 0.7
#: whylogs' drift categories, most severe first.
DRIFT_CATEGORIES = ("DRIFT", "POSSIBLE_DRIFT", "NO_DRIFT")


def finite(value: Any) -> float | None:
    """A plain float, or None for missing, NaN and infinite values."""
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True)
class ColumnStats:
    """The numbers of one column; None (or empty) where the profile has no such metric."""

    #: Values counted per type (:data:`TYPE_NAMES`); None when the column has no type counters.
    type_counts: Mapping[str, int] | None = None
    count: int | None = None
    null_count: int | None = None
    distinct: float | None = None
    #: Whether the column has a non-empty distribution sketch.
    has_distribution: bool = False
    mean: float | None = None
    stddev: float | None = None
    min: float | None = None
    max: float | None = None
    #: The quantiles asked of :func:`read_column`, in that order; empty without a distribution.
    quantiles: tuple[float | None, ...] = ()
    #: (value, estimated count) of every frequent item, most frequent first (ties by value).
    frequent_items: tuple[tuple[str, float], ...] = ()

    @property
    def typed_total(self) -> int:
        """How many values the type counters saw (nulls are not typed)."""
        return sum(self.type_counts.values()) if self.type_counts else 0

    @property
    def untyped(self) -> str | None:
        """``unknown`` without type counters, ``null`` when every value logged was null, ``unknown`` when
        nothing was logged; None when the counters saw values (then a caller's type rule decides)."""
        if self.type_counts is None:
            return "unknown"
        if self.typed_total == 0:
            return "null" if self.count else "unknown"
        return None


@dataclass(frozen=True, eq=False)
class ColumnSketches:
    """One column's metrics as :func:`read_sketches` and the drift test read them, without whylogs'
    metric objects: what a stored digest holds (the server builds these from digests straight), or
    :func:`column_sketches` of a column view. Each sketch is the sketch library's object."""

    #: ``counts/n`` and ``counts/null``; None without the counts metric
    counts: tuple[int, int] | None = None
    #: values counted per type (:data:`TYPE_NAMES`); None without the types metric
    type_counts: Mapping[str, int] | None = None
    #: the distribution's KLL sketch (None without a distribution), its mean and m2
    kll: Any = None
    mean: float | None = None
    m2: float | None = None
    #: the cardinality's HLL sketch (None without one)
    hll: Any = None
    #: the frequent items' sketch (None without one)
    frequent: Any = None
    #: whether these are all of the column's metrics, whylogs' standard ones, the counts among them:
    #: then the drift test scores it from these alone as whylogs would (else on whylogs' view)
    standard: bool = True


def _standard_metrics() -> dict[str, type[Any]]:
    from whylogs.core.metrics.column_metrics import ColumnCountsMetric, TypeCountersMetric
    from whylogs.core.metrics.metrics import (
        CardinalityMetric,
        DistributionMetric,
        FrequentItemsMetric,
        IntsMetric,
    )

    return {
        "counts": ColumnCountsMetric,
        "types": TypeCountersMetric,
        "distribution": DistributionMetric,
        "ints": IntsMetric,
        "cardinality": CardinalityMetric,
        "frequent_items": FrequentItemsMetric,
    }


_STANDARD_METRICS = _standard_metrics()


def column_sketches(column: ColumnProfileView) -> ColumnSketches:
    """What :class:`ColumnSketches` reads of a column view (its sketches are the view's own objects)."""
    values: dict[str, Any] = {}
    standard = all(type(column.get_metric(name)) is _STANDARD_METRICS.get(name) for name in column.get_metric_names())
    types = column.get_metric("types")
    if types is not None:
        values["type_counts"] = {name: int(getattr(types, name).value) for name in TYPE_NAMES if hasattr(types, name)}
    counts = column.get_metric("counts")
    if counts is not None:
        values["counts"] = (int(counts.n.value), int(counts.null.value))
    standard = standard and counts is not None
    cardinality = column.get_metric("cardinality")
    if cardinality is not None:
        values["hll"] = cardinality.hll.value
        standard = standard and values["hll"] is not None
    distribution = column.get_metric("distribution")
    if distribution is not None:
        values.update(kll=distribution.kll.value, mean=distribution.mean.value, m2=distribution.m2.value)
        standard = standard and values["kll"] is not None
    items = column.get_metric("frequent_items")
    if items is not None:
        values["frequent"] = items.frequent_strings.value
        standard = standard and values["frequent"] is not None
    return ColumnSketches(standard=standard, **values)


def frequent_strings(sketch: Any) -> list[Any]:
    """whylogs' frequent items of a frequent-strings sketch: ``(value, estimate, lower, upper)``
    rows, as its ``FrequentItemsMetric.to_summary_dict`` with the default summary config lists them."""
    config = SummaryConfig()
    found: list[Any] = sketch.get_frequent_items(config.frequent_items_error_type.to_datasketches_type())
    return found[: config.frequent_items_limit] if config.frequent_items_limit > 0 else found


def _sorted_items(sketch: Any) -> tuple[tuple[str, float], ...]:
    if sketch is None:
        return ()
    found = ((str(row[0]), float(row[1])) for row in frequent_strings(sketch))
    return tuple(sorted(found, key=lambda item: (-item[1], item[0])))


def frequent_items(column: ColumnProfileView) -> tuple[tuple[str, float], ...]:
    """The column's frequent items (whylogs' no-false-positives estimate), most frequent first."""
    metric = column.get_metric("frequent_items")
    return () if metric is None else _sorted_items(metric.frequent_strings.value)


def _stddev(column: ColumnSketches) -> float:
    """whylogs' ``DistributionMetric.stddev``: the sample standard deviation (0 for one value)."""
    n = column.kll.get_n()
    if n <= 1:
        return 0.0
    return math.sqrt(column.m2 / (n - 1))


def read_sketches(column: ColumnSketches, quantiles: Sequence[float] = ()) -> ColumnStats:
    """The numbers of one column, with the KLL quantiles at ``quantiles``."""
    values: dict[str, Any] = {}
    if column.type_counts is not None:
        values["type_counts"] = dict(column.type_counts)
    if column.counts is not None:
        values["count"], values["null_count"] = column.counts
    if column.hll is not None:
        values["distinct"] = finite(column.hll.get_estimate())
    sketch = column.kll
    if sketch is not None and not sketch.is_empty():
        values.update(
            has_distribution=True,
            mean=finite(column.mean),
            stddev=finite(_stddev(column)),
            min=finite(sketch.get_min_value()),
            max=finite(sketch.get_max_value()),
            quantiles=tuple(finite(q) for q in sketch_quantiles.along(sketch, quantiles)) if quantiles else (),
        )
    values["frequent_items"] = _sorted_items(column.frequent)
    return ColumnStats(**values)


def read_column(column: ColumnProfileView, quantiles: Sequence[float] = ()) -> ColumnStats:
    """The numbers of one column of a profile view, with the KLL quantiles at ``quantiles``."""
    return read_sketches(column_sketches(column), quantiles)


@dataclass(frozen=True, eq=False)
class ProfileColumns:
    """A profile's columns as :class:`ColumnSketches`, in its column order, and ``view(names)``: the
    whylogs view they are of (of those columns only, with names), for what only whylogs reads.
    Build one with :meth:`of` (of a view) or, on the server, from a digest."""

    columns: Mapping[str, ColumnSketches]
    view: Callable[[Sequence[str] | None], DatasetProfileView]
    #: every column's metrics are whylogs' standard ones (see :attr:`ColumnSketches.standard`)
    standard: bool = True

    @classmethod
    def of(cls, view: DatasetProfileView) -> ProfileColumns:
        found = view.get_columns()
        columns = {name: column_sketches(column) for name, column in found.items() if column is not None}
        standard = len(columns) == len(found) and all(c.standard for c in columns.values())

        def whole_or_part(names: Sequence[str] | None) -> DatasetProfileView:
            return view if names is None else _only(view, names)

        return cls(columns, whole_or_part, standard)


#: A profile as the timeline reads it: a whylogs view, or its columns' sketches.
Profile: TypeAlias = "DatasetProfileView | ProfileColumns"


def profile_columns(profile: Profile) -> ProfileColumns:
    """``profile``'s :class:`ProfileColumns` (itself when it is one)."""
    return profile if isinstance(profile, ProfileColumns) else ProfileColumns.of(profile)


# -- the type of a column ---------------------------------------------------------------------


def type_of(stats: ColumnStats) -> str:
    """The type of a column from its type counters: the one rule of every page, series and monitor.

    - ``unknown`` without type counters or when nothing was logged, ``null`` when every value was null;
    - the majority type when one type holds at least :data:`TYPE_MAJORITY` (70%) of the typed
      values, except that integers with some fractions are ``fractional``;
    - else ``fractional`` when numbers (integral and fractional together) hold 70%;
    - else ``mixed``: e.g. 600 strings and 400 integers, or 50% integers, 10% floats, 40% strings.
    """
    counts = stats.type_counts
    if counts is None or stats.untyped is not None:
        return stats.untyped or "unknown"
    total = stats.typed_total
    top = max(counts, key=lambda name: counts[name])
    if counts[top] / total >= TYPE_MAJORITY:
        if top == "integral" and counts.get("fractional", 0) > 0:
            return "fractional"
        return top
    numeric = sum(counts.get(name, 0) for name in NUMERIC_TYPES)
    if numeric / total >= TYPE_MAJORITY:
        return "fractional"
    return "mixed"


def infer_type(column: ColumnProfileView) -> str:
    """The column's type by :func:`type_of`."""
    return type_of(read_column(column))


# -- merging ----------------------------------------------------------------------------------


def merge_views(views: Sequence[DatasetProfileView]) -> DatasetProfileView:
    """One view of several (a bucket's batches, a batch's segments) with whylogs' own merge: exact
    for counts, mergeable sketches for the rest; its columns in the order the views first list them.
    Raises ValueError for no views."""
    if not views:
        raise ValueError("nothing to merge: give at least one profile view")
    merged = views[0]
    for view in views[1:]:
        merged = merged.merge(view)
    if len(views) > 1:  # whylogs' merge lists the columns in a set's order, which changes per process:
        found = merged.get_columns()  # list them as the views first do (as merge_digested does)
        order = dict.fromkeys(name for view in views for name in view.get_columns())
        merged._columns = {name: found[name] for name in order if name in found}
    return merged


# -- drift ------------------------------------------------------------------------------------


def severity(category: str | None) -> int:
    """0 for DRIFT, 1 for POSSIBLE_DRIFT, 2 for NO_DRIFT, 3 for nothing to compare."""
    return DRIFT_CATEGORIES.index(category) if category in DRIFT_CATEGORIES else len(DRIFT_CATEGORIES)


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
        rank = severity(self.category)
        if self.pvalue is not None:
            return rank, self.pvalue
        if self.statistic is not None:
            return rank, -self.statistic
        return rank, math.inf


def most_drifted_first(scores: Mapping[str, DriftScore]) -> list[DriftScore]:
    """Scores sorted from most to least drifted (ties by column name)."""
    return sorted(scores.values(), key=lambda s: (s.severity, s.column))


# -- the KS p-value ----------------------------------------------------------------------------

#: Effective sample sizes up to this get scipy's exact Kolmogorov distribution, as in whylogs (its
#: small-sample algorithms cost 1-2 ms each); above it, :func:`ks_pvalues` evaluates the same
#: distribution by the large-sample methods scipy itself uses there, in a few array operations.
KS_EXACT_MAX_N = 140
#: The largest difference between :func:`ks_pvalues` and whylogs' ``kstwo.sf``, measured over a grid
#: of (D, n) by ``benchmarks/bench_ks_pvalue.py``: 3.07e-6, at n = 141 and p = 0.91; it falls
#: about as 1/n**2 (1.2e-7 at n = 500, under 1e-12 from 10,000), and is nonzero only where p > 0.87.
KS_PVALUE_MAX_ERROR = 3.1e-6
#: n * D**2 from which scipy takes the p-value as twice the one-sided (Smirnov) tail, and past which
#: it is 0 (below about 1e-160).
_SMIRNOV_FROM = 2.2
_ZERO_FROM = 370.0
#: Terms of the Pelz-Good sums: the first omitted one is below 1e-60 of the first for n D**2 < 2.2.
_PG_TERMS = 10


def _pelz_good_cdf(z: np.ndarray, n: np.ndarray) -> np.ndarray:
    """P(sqrt(n) D_n <= z) by the Pelz-Good expansion K0 + K1/sqrt(n) + K2/n + K3/n**1.5 (Pelz and
    Good 1976; Simard and L'Ecuyer 2011, section 2.3), each K as its theta-function series in
    ``exp(-pi**2 (2k-1)**2 / (8 z**2))``, which converges fast for the small z it is used at."""
    pi2 = math.pi**2
    z = z[:, None]
    z2 = z * z
    m2 = ((2 * np.arange(1, _PG_TERMS + 1) - 1) ** 2)[None, :].astype(float)  # (2k-1)**2
    odd = np.exp(-pi2 * m2 / (8 * z2))
    k0 = odd.sum(axis=1)
    k1 = ((pi2 * m2 / 4 - z2) * odd).sum(axis=1)
    k2 = ((6 * z2**3 + 2 * z2**2 + pi2 * m2 * (2 * z2**2 - 5 * z2) / 4 + pi2**2 * m2**2 * (1 - 2 * z2) / 16) * odd).sum(
        axis=1
    )
    k3 = (
        (
            -30 * z2**3
            - 90 * z2**4
            + pi2 * m2 * (135 * z2**2 - 96 * z2**3) / 4
            + pi2**2 * m2**2 * (212 * z2**2 - 60 * z2) / 16
            + pi2**3 * m2**3 * (5 - 30 * z2) / 64
        )
        * odd
    ).sum(axis=1)
    k = np.arange(1, _PG_TERMS + 1)[None, :].astype(float)
    whole = k * k * np.exp(-pi2 * k * k / (2 * z2))  # the sums over every integer k of K2 and K3
    k2_extra = -pi2 * whole.sum(axis=1) / (36 * z[:, 0] ** 3)
    k3_extra = pi2 * ((3 * z2 - pi2 * k * k) * whole).sum(axis=1) / (216 * z[:, 0] ** 6)
    z = z[:, 0]
    root = math.sqrt(2 * math.pi)
    k0 = root * k0 / z
    k1 = root * k1 / (6 * z**4)
    k2 = root * (k2 / (72 * z**7) + k2_extra)
    k3 = root * (k3 / (6480 * z**10) + k3_extra)
    rn = np.sqrt(n)
    return np.asarray(k0 + k1 / rn + k2 / n + k3 / (n * rn))


def ks_pvalues(statistics: Any, sizes: Any) -> np.ndarray:
    """whylogs' KS p-values, ``kstwo.sf(D, n)`` (the two-sided one-sample Kolmogorov distribution at
    the rounded effective size ``n = round(m n' / (m + n'))``, scipy's ``ks_2samp(method="asymp")``),
    for arrays of statistics and sizes, at a cost that does not grow with n.

    For ``n <= KS_EXACT_MAX_N`` it is scipy's exact computation, the number whylogs shows. Above,
    it takes scipy's own route except at one place: the closed forms at the ends, and for
    ``n D**2 >= 2.2`` (p below 0.025) twice the Smirnov tail, exactly as scipy; below that, scipy
    uses the Pelz-Good expansion for p-values under about 0.9 (wherever the 0.05 and 0.15
    thresholds fall) and, above, the Durbin matrix method, which costs milliseconds per column
    (a matrix power of size ``2 n D``: 8-13 ms at daily buckets, two thirds of a first timeline
    view). Here Pelz-Good gives those too: at most :data:`KS_PVALUE_MAX_ERROR` from scipy's, and
    only where the category is ``NO_DRIFT`` by far. So the category is whylogs' everywhere.
    A size that is not a positive integer gives NaN, as scipy."""
    from scipy import special
    from scipy.stats import distributions

    d = np.atleast_1d(np.asarray(statistics, dtype=float))
    n = np.atleast_1d(np.asarray(sizes, dtype=float))
    d, n = np.broadcast_arrays(d, n)
    p = np.full(d.shape, np.nan)
    valid = (n > 0) & (np.floor(n) == n) & ~np.isnan(d)
    exact = valid & (n <= KS_EXACT_MAX_N)
    if exact.any():
        p[exact] = distributions.kstwo.sf(d[exact], n[exact])
    large = valid & ~exact
    if not large.any():
        return p
    x, m = d[large], n[large]
    t = m * x
    tail = m * x * x
    q = np.full(x.shape, np.nan)
    ends = (x <= 0) | (t <= 0.5)
    q[ends] = 1.0
    q[x >= 1] = 0.0
    left = np.isnan(q) & (t <= 1)  # 1/2n < D <= 1/n (Ruben and Gambino): n!/n**n (2t - 1)**n
    q[left] = -np.expm1(special.gammaln(m[left] + 1) - m[left] * np.log(m[left]) + m[left] * np.log(2 * t[left] - 1))
    right = np.isnan(q) & (t >= m - 1)  # D >= 1 - 1/n
    q[right] = 2 * (1 - x[right]) ** m[right]
    half = np.isnan(q) & (x >= 0.5)
    q[half] = 2 * special.smirnov(m[half], x[half])
    q[np.isnan(q) & (tail >= _ZERO_FROM)] = 0.0
    smirnov = np.isnan(q) & (tail >= _SMIRNOV_FROM)
    q[smirnov] = 2 * special.smirnov(m[smirnov], x[smirnov])
    rest = np.isnan(q)
    if rest.any():
        z = np.sqrt(m[rest]) * x[rest]
        cdf = np.zeros(z.shape)
        far = z > 0.041743441416853426  # below, exp(-pi**2 / (8 z**2)) underflows: the CDF is 0
        cdf[far] = _pelz_good_cdf(z[far], m[rest][far])
        q[rest] = 1.0 - cdf
    p[large] = np.clip(q, 0.0, 1.0)
    return p


#: The points whylogs' KS test takes each sketch's quantiles at (its ``KSTestConfig`` default).
KS_POINTS = tuple(float(q) for q in np.linspace(0, 1, 100))
#: How many KLL sketches :class:`_Quantiles` remembers (the reference's, and the last few buckets').
QUANTILE_CACHE_SIZE = 64


class Split(NamedTuple):
    """A KLL sketch's distinct quantiles at the KS test's points, ascending, and its CDF at them."""

    points: list[float]
    cdf: list[float]


class _Quantiles:
    """The quantiles of KLL sketches, each taken once while the sketch is unchanged.

    The timeline compares every bucket with the same reference and each bucket twice (with the
    reference and, as the previous bucket, with the next one): whylogs' KS test would take the same
    sketch's quantiles for every comparison. An entry is the sketch itself (held, so that its id is
    not reused), its count and the points asked for: a sketch that took more values since then has
    a new count and its quantiles are taken again. :meth:`split` keeps, the same way, each sketch's
    distinct quantiles and its own CDF at them (what every KS test of the sketch evaluates again).
    """

    def __init__(self, size: int = QUANTILE_CACHE_SIZE) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._entries: OrderedDict[int, tuple[Any, int, tuple[float, ...], np.ndarray]] = OrderedDict()
        self._splits: OrderedDict[int, tuple[Any, int, tuple[float, ...], Split | None]] = OrderedDict()
        #: quantiles at other points than the KS test's, given by :meth:`remember` (read by :meth:`along`)
        self._others: OrderedDict[int, tuple[Any, int, tuple[float, ...], tuple[float, ...]]] = OrderedDict()
        self._points: dict[tuple[float, ...], tuple[float, ...]] = {}
        self._ks_points = self.points(KS_POINTS)

    def points(self, wanted: Sequence[float]) -> tuple[float, ...]:
        """``wanted`` as the one tuple of its values this cache compares by identity (cheaply)."""
        key = tuple(float(p) for p in wanted)
        with self._lock:
            return self._points.setdefault(key, key)

    def _kept(self, sketch: Any, points: tuple[float, ...]) -> np.ndarray | None:
        key, count = id(sketch), sketch.get_n()
        with self._lock:
            entry = self._entries.get(key)
            if (
                entry is not None
                and entry[0] is sketch
                and entry[1] == count
                and (entry[2] is points or entry[2] == points)
            ):
                self._entries.move_to_end(key)
                return entry[3]
        return None

    def _keep(self, sketch: Any, points: tuple[float, ...], values: np.ndarray) -> np.ndarray:
        values.setflags(write=False)
        with self._lock:
            self._entries[id(sketch)] = (sketch, sketch.get_n(), points, values)
            self._entries.move_to_end(id(sketch))
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)
        return values

    def __call__(self, sketch: Any, points: tuple[float, ...]) -> np.ndarray:
        """The quantiles of ``sketch`` at ``points`` (best a tuple from :meth:`points`)."""
        found = self._kept(sketch, points)
        if found is not None:
            return found
        return self._keep(sketch, points, np.asarray(sketch.get_quantiles(list(points)), dtype=float))

    def along(self, sketch: Any, wanted: Sequence[float]) -> list[float]:
        """``sketch.get_quantiles(wanted)``. A sketch without its KS quantiles (at :data:`KS_POINTS`)
        kept gets them in the same call, and they are kept: a column read and then compared sorts
        its sketch once. The library takes each fraction on its own, so the numbers are those of
        separate calls."""
        points = self._ks_points
        if self._kept(sketch, points) is not None:
            known = self._known_others(sketch, wanted)
            if known is not None:
                return list(known)
            found: list[float] = sketch.get_quantiles(list(wanted))
            return found
        values: list[float] = sketch.get_quantiles([*points, *wanted])
        self._keep(sketch, points, np.asarray(values[: len(points)], dtype=float))
        return values[len(points) :]

    def split(self, sketch: Any, points: tuple[float, ...]) -> Split | None:
        """The distinct quantiles of ``sketch`` at ``points``, ascending, and its CDF at each of them
        (without the CDF's closing 1): the KS test of two sketches evaluates each sketch's CDF at
        both sketches' quantiles, and these are its own half. None when a quantile is not finite
        (whylogs' own loop then decides)."""
        key, count = id(sketch), sketch.get_n()
        with self._lock:
            entry = self._splits.get(key)
            if entry is not None and entry[0] is sketch and entry[1] == count and entry[2] is points:
                self._splits.move_to_end(key)
                return entry[3]
        found = _split_of(sketch, self(sketch, points))
        self._keep_split(sketch, points, found)
        return found

    def _keep_split(self, sketch: Any, points: tuple[float, ...], found: Split | None) -> None:
        with self._lock:
            self._splits[id(sketch)] = (sketch, sketch.get_n(), points, found)
            self._splits.move_to_end(id(sketch))
            while len(self._splits) > self.size:
                self._splits.popitem(last=False)

    def _known_others(self, sketch: Any, wanted: Sequence[float]) -> tuple[float, ...] | None:
        with self._lock:
            entry = self._others.get(id(sketch))
            if entry is None or entry[0] is not sketch or entry[1] != sketch.get_n() or entry[2] != tuple(wanted):
                return None
            self._others.move_to_end(id(sketch))
            return entry[3]

    def remember(self, sketch: Any, known: KnownQuantiles) -> None:
        """Keep what :func:`known_quantiles` took of a sketch with the same content as ``sketch``
        (such as the one it was serialized from): ``sketch``'s quantiles and split are then read,
        not taken again. Known quantiles of other points than this process' are ignored."""
        ks = len(self._ks_points)
        if len(known.values) != len(known.fractions) or not self._ks_fractions(known.fractions):
            return
        self._keep(sketch, self._ks_points, np.array(known.values[:ks], dtype=float))
        self._keep_split(sketch, self._ks_points, known.split)
        if len(known.fractions) > ks:
            others = tuple(float(v) for v in known.values[ks:])
            with self._lock:
                self._others[id(sketch)] = (sketch, sketch.get_n(), known.fractions[ks:], others)
                self._others.move_to_end(id(sketch))
                while len(self._others) > self.size:
                    self._others.popitem(last=False)

    @functools.lru_cache(maxsize=8)  # noqa: B019 (one cache, for the life of the process)
    def _ks_fractions(self, fractions: tuple[float, ...]) -> bool:
        """Whether ``fractions`` start with the KS test's points."""
        return fractions[: len(self._ks_points)] == self._ks_points

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._splits.clear()
            self._others.clear()


def _split_of(sketch: Any, quantiles: np.ndarray) -> Split | None:
    """:meth:`_Quantiles.split` of a sketch from its quantiles at the KS test's points."""
    distinct = np.unique(quantiles)  # sorted, NaN last
    if distinct.size and math.isfinite(distinct[0]) and math.isfinite(distinct[-1]):
        at = distinct.tolist()
        return Split(at, sketch.get_cdf(at)[:-1])
    return None


class KnownQuantiles(NamedTuple):
    """What the timeline takes of a KLL sketch, taken once and kept with it (a stored rollup keeps
    them: ``server/rollups.py``): its quantiles at ``fractions`` (:data:`KS_POINTS`, then the
    others asked for) and its :class:`Split` at the KS points."""

    fractions: tuple[float, ...]
    values: Sequence[float] | np.ndarray
    split: Split | None


def known_quantiles(sketch: Any, others: Sequence[float] = ()) -> KnownQuantiles | None:
    """The :class:`KnownQuantiles` of a KLL sketch, at :data:`KS_POINTS` and ``others``, the numbers
    :class:`_Quantiles` takes (None for an empty sketch)."""
    if sketch.is_empty():
        return None
    fractions = (*KS_POINTS, *(float(p) for p in others))
    values = tuple(float(v) for v in sketch.get_quantiles(list(fractions)))
    split = _split_of(sketch, np.asarray(values[: len(KS_POINTS)], dtype=float))
    return KnownQuantiles(fractions, values, split)


#: The quantiles the KS test of :func:`drift_scores` compares.
sketch_quantiles = _Quantiles()


@functools.cache
def _batched_classes() -> tuple[type[Any], type[Any]]:
    """:class:`_BatchedKS` and :class:`_BatchedChiSquare`, made on first use: whylogs' drift module
    is slow to import, and ``import whylogs_songbird`` must not pay for it."""
    from whylogs.viz.drift.column_drift_algorithms import (
        KS,
        ChiSquare,
        DriftAlgorithmScore,
        zero_padding_frequent_items,
    )
    from whylogs.viz.drift.configs import KSTestConfig

    #: whylogs' default KS configuration, made once (each KS test would make its own: its points by
    #: numpy's linspace); no test changes it
    ks_config = KSTestConfig()

    class _DeferredScore(DriftAlgorithmScore):
        """A score whose p-value (and category) a ``settle`` fills in later, in one call for every
        column. It remembers the dicts whylogs makes of it, to fill those in too."""

        def __init__(self, algorithm: str, statistic: float, thresholds: Any, parameter: float) -> None:
            super().__init__(algorithm=algorithm, statistic=statistic, thresholds=thresholds)
            #: what the p-value needs besides the statistic (KS: the effective size; chi-square: the degrees of freedom)
            self.parameter = parameter
            self.dicts: list[dict[str, Any]] = []

        def to_dict(self) -> dict[str, Any]:
            made: dict[str, Any] = super().to_dict()
            self.dicts.append(made)
            return made

        def fill(self, pvalue: float, category: str | None) -> None:
            self.pvalue = pvalue
            self.drift_category = category
            for made in self.dicts:
                made["pvalue"] = pvalue
                made["drift_category"] = category

    class _BatchedKS(KS):
        """whylogs' KS test, with the CDFs of each sketch taken in one call instead of one per point,
        each sketch's quantiles taken once (:data:`sketch_quantiles`), and the p-values of all
        columns in one call (see :meth:`settle`).

        whylogs' loop evaluates both CDFs at every quantile of either sketch and keeps the largest
        difference; the same points without repeats give the same maximum, and each sketch's CDF at
        its own quantiles is kept with them (:meth:`_Quantiles.split`). The p-value is
        whylogs' formula, ``kstwo.sf(statistic, round(m n / (m + n)))``, by :func:`ks_pvalues` (the
        same distribution, evaluated at a cost that does not grow with n); each column's score waits
        for :meth:`settle`, which computes them all in one call. Anything unusual (a point that is
        not finite) goes through whylogs' own loop.
        """

        def __init__(self, quantiles: Any = None) -> None:
            super().__init__(ks_config)
            self._quantiles = sketch_quantiles if quantiles is None else quantiles
            self._points_of: Any = None
            self._points: tuple[float, ...] = ()
            self._deferred: list[_DeferredScore] = []

        def _compute_ks_score(
            self, target_distribution: Any, reference_distribution: Any, with_thresholds: bool = False
        ) -> Any:
            if reference_distribution.is_empty() or target_distribution.is_empty():
                return None
            quantiles = self._parameter_config.quantiles
            if self._points_of is not quantiles:
                self._points_of, self._points = quantiles, self._quantiles.points(quantiles)
            target = self._quantiles.split(target_distribution, self._points)
            reference = self._quantiles.split(reference_distribution, self._points)
            if target is None or reference is None:  # a quantile that is not finite
                return super()._compute_ks_score(target_distribution, reference_distribution, with_thresholds)
            # the largest difference of the CDFs at every quantile of either sketch (CDFs at finite
            # points are never NaN): each sketch's own CDF at its own quantiles is kept (Split), so
            # only the other's CDF at them is evaluated; a CDF's closing 1 is left out (map stops at
            # the shorter list), as whylogs' loop ends before it
            d_max = float(
                max(
                    max(map(abs, map(operator.sub, target.cdf, reference_distribution.get_cdf(target.points)))),
                    max(map(abs, map(operator.sub, target_distribution.get_cdf(reference.points), reference.cdf))),
                )
            )
            m, n = sorted([target_distribution.get_n(), reference_distribution.get_n()], reverse=True)
            thresholds = self._parameter_config.thresholds if with_thresholds else None
            # Python's round, as numpy's, takes a half to the even neighbour
            score = _DeferredScore(self.name, d_max, thresholds, float(round(m * n / (m + n))))
            self._deferred.append(score)
            return score

        def settle(self) -> None:
            """Fill in the p-value and category of every deferred score (and of the dicts made of it).
            A p-value scipy cannot give is left NaN: whylogs would not have scored that column."""
            if not self._deferred:
                return
            statistics = np.array([score.statistic for score in self._deferred], dtype=float)
            sizes = np.array([score.parameter for score in self._deferred], dtype=float)
            pvalues = ks_pvalues(statistics, sizes)
            for score, pvalue in zip(self._deferred, pvalues):
                pvalue = float(pvalue)
                judged = score.thresholds is not None and not np.isnan(pvalue)
                score.fill(pvalue, self._get_drift_category(measure=pvalue) if judged else score.drift_category)
            self._deferred = []

    class _BatchedChiSquare(ChiSquare):
        """whylogs' chi-square test on the frequent items, with the p-values of all columns in one
        call of scipy's chi-square survival function (see :meth:`settle`) instead of one per column.

        The statistic and the degrees of freedom are whylogs': the target's frequent items (padded
        with the reference's), each against the reference's share of it scaled to the target's
        count and truncated to an integer; a reference count of 0 makes the statistic infinite.
        """

        def __init__(self) -> None:
            super().__init__()
            self._deferred: list[_DeferredScore] = []

        def _compute_chi_squared_score(
            self, target_distribution: Any, reference_distribution: Any, with_thresholds: bool = False
        ) -> Any:
            target_total = target_distribution["total_count"]
            reference_total = reference_distribution["total_count"]
            if reference_total <= 0 or target_total <= 0:
                return None
            target_items, _ = zero_padding_frequent_items(
                target_distribution["frequent_items"], reference_distribution["frequent_items"]
            )
            share = {
                item["value"]: item["estimate"] / reference_total for item in reference_distribution["frequent_items"]
            }
            statistic = 0.0
            for item in target_items:
                expected = int(share[item["value"]] * target_total) if item["value"] in share else 0
                if expected == 0:
                    statistic = np.inf
                    break
                statistic += (item["estimate"] - expected) ** 2 / expected
            freedom = target_distribution["unique_count"] - 1
            freedom = freedom if freedom > 0 else 1
            thresholds = self._parameter_config.thresholds if with_thresholds and self._parameter_config else None
            score = _DeferredScore(self.name, statistic, thresholds, freedom)
            self._deferred.append(score)
            return score

        def settle(self) -> None:
            """Fill in the p-value (and, with thresholds, the category) of every deferred score."""
            if not self._deferred:
                return
            from scipy import special

            statistics = np.array([score.statistic for score in self._deferred], dtype=float)
            freedoms = np.array([score.parameter for score in self._deferred], dtype=float)
            # scipy's chi2.sf for these (a statistic >= 0 or infinite, freedoms >= 1) is this function,
            # the same numbers without its generic argument checks (most of its cost)
            pvalues = special.chdtrc(freedoms, statistics)
            for score, pvalue in zip(self._deferred, pvalues):
                category = self._get_drift_category(measure=pvalue) if score.thresholds is not None else None
                score.fill(pvalue, category)
            self._deferred = []

    return _BatchedKS, _BatchedChiSquare


def _split_columns(target: DatasetProfileView, reference: DatasetProfileView) -> tuple[list[str], list[str]]:
    """The shared columns whylogs' default choice scores with the KS test (both have a non-empty
    distribution), and those it surely hands to the chi-square test (its KS test returns nothing:
    a side without a distribution, or an empty one)."""
    ks, chi_square = [], []
    reference_columns = reference.get_columns()
    for name, column in target.get_columns().items():
        other = reference_columns.get(name)
        if column is None or other is None:
            continue
        mine, theirs = column.get_metric("distribution"), other.get_metric("distribution")
        if mine is None or theirs is None:
            chi_square.append(name)
        elif mine.kll.value is None or theirs.kll.value is None:
            continue
        elif mine.kll.value.is_empty() or theirs.kll.value.is_empty():
            chi_square.append(name)
        else:
            ks.append(name)
    return ks, chi_square


def drift_scores(target: Profile, reference: Profile) -> dict[str, DriftScore]:
    """Drift of every column the two profiles share, with whylogs' default algorithm choice
    (KS test for distributions, chi-square for frequent items) and its thresholds.

    Columns whylogs cannot score (e.g. no shared metric) are left out. The numbers are those of
    ``calculate_drift_scores`` without a drift map: the columns it would score with the KS test
    get the KS test (not the chi-square test it also runs on them, and then drops), with each
    sketch's quantiles taken once (:data:`sketch_quantiles`), its CDFs in one call and the p-values
    in one call of :func:`ks_pvalues` (within :data:`KS_PVALUE_MAX_ERROR` of whylogs', the same
    category); the columns it would score with the chi-square test get their p-values in one call
    of scipy. A column the KS test cannot score falls back to the default choice.

    Profiles of whylogs' standard metrics only (:class:`ProfileColumns`, ``standard``) are scored
    from their sketches straight, without whylogs' per-column objects; any other goes through
    ``calculate_drift_scores`` with a drift map of those choices.
    """
    mine, theirs = profile_columns(target), profile_columns(reference)
    if not (mine.standard and theirs.standard):
        return _drift_scores_by_map(mine.view(None), theirs.view(None))
    batched_ks, batched_chi_square = _batched_classes()
    ks, chi_square = batched_ks(), batched_chi_square()
    found: dict[str, Any] = {}
    ks_names: list[str] = []
    for name, column in mine.columns.items():
        other = theirs.columns.get(name)
        if other is None:
            continue
        if column.kll is None or other.kll is None or column.kll.is_empty() or other.kll.is_empty():
            # whylogs' KS test returns nothing: its chi-square test, on whylogs' frequent stats
            stats = _frequent_stats(column), _frequent_stats(other)
            found[name] = None if not all(stats) else chi_square._compute_chi_squared_score(*stats, True)
        else:
            found[name] = ks._compute_ks_score(column.kll, other.kll, True)
            ks_names.append(name)
    ks.settle()
    chi_square.settle()
    unscored = [name for name in ks_names if found[name] is None or _is_nan(found[name].pvalue)]
    # e.g. a p-value whylogs' KS test gives up on: the default choice decides
    fallback = _default_choice(mine.view(unscored), theirs.view(unscored)) if unscored else {}
    scores: dict[str, DriftScore] = {}
    for name, score in found.items():
        if name in fallback:
            scores.update(_scores({name: fallback.pop(name)}))
        elif score is not None:  # as _scores reads score.to_dict(), without making the dict
            scores[name] = _score(name, score.algorithm, score.statistic, score.pvalue, score.drift_category)
    scores.update(_scores(fallback))
    return scores


def _frequent_stats(column: ColumnSketches) -> dict[str, Any] | None:
    """whylogs' ``get_frequent_stats`` of a standard column (None without frequent items or cardinality)."""
    if column.frequent is None or column.hll is None or column.counts is None:
        return None
    return {
        "frequent_items": [{"value": row[0], "estimate": row[1]} for row in frequent_strings(column.frequent)],
        "total_count": column.counts[0],
        "unique_count": int(column.hll.get_estimate()),
    }


def _default_choice(target: DatasetProfileView, reference: DatasetProfileView) -> dict[str, Any]:
    from whylogs.viz.drift.column_drift_algorithms import calculate_drift_scores

    found: dict[str, Any] = calculate_drift_scores(target_view=target, reference_view=reference, with_thresholds=True)
    return found


def _drift_scores_by_map(target: DatasetProfileView, reference: DatasetProfileView) -> dict[str, DriftScore]:
    """:func:`drift_scores` of any views, through ``calculate_drift_scores`` with a drift map."""
    from whylogs.viz.drift.column_drift_algorithms import ColumnDriftAlgorithm, calculate_drift_scores

    unreadable = _frequent_items_without_counts(target) | _frequent_items_without_counts(reference)
    if unreadable:  # whylogs' chi-square test fails on them: left out, as the sketch path leaves them
        target = _only(target, [name for name in target.get_columns() if name not in unreadable])
        reference = _only(reference, [name for name in reference.get_columns() if name not in unreadable])
    batched_ks, batched_chi_square = _batched_classes()
    ks, chi_square = batched_ks(), batched_chi_square()
    ks_names, chi_square_names = _split_columns(target, reference)
    drift_map: dict[str, ColumnDriftAlgorithm] = {name: ks for name in ks_names}
    drift_map.update({name: chi_square for name in chi_square_names})
    raw = calculate_drift_scores(
        target_view=target, reference_view=reference, drift_map=drift_map or None, with_thresholds=True
    )
    ks.settle()
    chi_square.settle()
    unscored = [name for name in ks_names if _unscored(raw.get(name))]
    if unscored:  # e.g. a p-value whylogs' KS test gives up on: the default choice decides
        raw.update(_default_choice(_only(target, unscored), _only(reference, unscored)))
    return _scores(raw)


def _frequent_items_without_counts(view: DatasetProfileView) -> set[str]:
    """The columns of ``view`` with frequent items but no counts metric: whylogs' frequent stats
    (and so its chi-square test) cannot read them, and raise instead of passing them by."""
    return {
        name
        for name, column in view.get_columns().items()
        if column.get_metric("frequent_items") is not None and column.get_metric("counts") is None
    }


def _score(column: str, algorithm: Any, statistic: Any, pvalue: Any, category: Any) -> DriftScore:
    """The :class:`DriftScore` of one column from whylogs' fields of a score (``to_dict``'s)."""
    return DriftScore(
        column=column,
        algorithm=str(algorithm or "?"),
        statistic=None if statistic is None else float(statistic),
        pvalue=finite(pvalue),
        category=category or None,
    )


def _scores(raw: Mapping[str, Mapping[str, Any] | None]) -> dict[str, DriftScore]:
    """The scores of whylogs' ``calculate_drift_scores`` (a column it gave nothing is left out)."""
    return {
        column: _score(
            column, score.get("algorithm"), score.get("statistic"), score.get("pvalue"), score.get("drift_category")
        )
        for column, score in raw.items()
        if score
    }


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _unscored(score: Mapping[str, Any] | None) -> bool:
    """Whether the KS test gave a column nothing, or a p-value scipy could not give (NaN)."""
    return not score or _is_nan(score.get("pvalue"))


def _only(view: DatasetProfileView, names: Sequence[str]) -> DatasetProfileView:
    columns = view.get_columns()
    return DatasetProfileView(
        columns={name: columns[name] for name in names if name in columns},
        dataset_timestamp=None,
        creation_timestamp=None,
    )
