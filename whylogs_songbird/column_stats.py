"""Reading one column of a whylogs profile view into plain numbers: pure logic, no HTTP.

Both the observatory summaries (``whylogs_songbird.server.summaries``) and the session timeline
(:mod:`whylogs_songbird.timeline`) show the same numbers of a column, each in its own shape; this
module reads them once from whylogs' metrics: the type counters, counts and nulls, the HLL
distinct estimate, the KLL distribution (mean, standard deviation, range and the quantiles a
caller asks for) and the frequent-items sketch. Every number is a finite float or None.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from whylogs.core.configs import SummaryConfig
from whylogs.core.view.column_profile_view import ColumnProfileView

#: The type counters of whylogs' ``types`` metric.
TYPE_NAMES = ("integral", "fractional", "boolean", "string", "object", "tensor")
#: The types whose columns get a distribution chart or a numeric series.
NUMERIC_TYPES = ("integral", "fractional")


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


def frequent_items(column: ColumnProfileView) -> tuple[tuple[str, float], ...]:
    """The column's frequent items (whylogs' no-false-positives estimate), most frequent first."""
    metric = column.get_metric("frequent_items")
    if metric is None:
        return ()
    found = metric.to_summary_dict(SummaryConfig()).get("frequent_strings") or []
    return tuple(sorted(((str(item.value), float(item.est)) for item in found), key=lambda item: (-item[1], item[0])))


def read_column(column: ColumnProfileView, quantiles: Sequence[float] = ()) -> ColumnStats:
    """The numbers of one column of a profile view, with the KLL quantiles at ``quantiles``."""
    values: dict[str, Any] = {}
    types = column.get_metric("types")
    if types is not None:
        values["type_counts"] = {name: int(getattr(types, name).value) for name in TYPE_NAMES if hasattr(types, name)}
    counts = column.get_metric("counts")
    if counts is not None:
        values["count"] = int(counts.n.value)
        values["null_count"] = int(counts.null.value)
    cardinality = column.get_metric("cardinality")
    if cardinality is not None and cardinality.hll.value is not None:
        values["distinct"] = finite(cardinality.hll.value.get_estimate())
    distribution = column.get_metric("distribution")
    if distribution is not None and distribution.kll.value is not None and not distribution.kll.value.is_empty():
        sketch = distribution.kll.value
        values.update(
            has_distribution=True,
            mean=finite(distribution.mean.value),
            stddev=finite(distribution.stddev),
            min=finite(sketch.get_min_value()),
            max=finite(sketch.get_max_value()),
            quantiles=tuple(finite(q) for q in sketch.get_quantiles(list(quantiles))) if quantiles else (),
        )
    values["frequent_items"] = frequent_items(column)
    return ColumnStats(**values)
