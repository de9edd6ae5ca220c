"""A profile's *digest*: what the observatory needs of it, stored by the ingest worker so that no
page deserializes a profile twice. Pure logic, no I/O.

For each column, the digest keeps the components of whylogs' standard metrics the pages use —
counts, type counters, the distribution (mean, m2 and the KLL sketch), cardinality (HLL sketch)
and frequent items (frequent-strings sketch) — with each sketch in its own serialized form.
:func:`view_from_digest` rebuilds a :class:`DatasetProfileView` of those metrics with their
constructors, which is many times faster than whylogs' generic deserialization, so summaries,
charts, merges and drift all keep using whylogs' own code on the rebuilt view.
"""

from __future__ import annotations

import base64
import copy
import json
import zlib
from typing import Any, TypeVar

import whylogs_sketching as ds
from whylogs.core import DatasetProfileView
from whylogs.core.metrics.column_metrics import ColumnCountsMetric, TypeCountersMetric
from whylogs.core.metrics.metric_components import (
    FractionalComponent,
    FrequentStringsComponent,
    HllComponent,
    IntegralComponent,
    KllComponent,
    MetricComponent,
)
from whylogs.core.metrics.metrics import CardinalityMetric, DistributionMetric, FrequentItemsMetric, Metric
from whylogs.core.view.column_profile_view import ColumnProfileView

C = TypeVar("C", bound=MetricComponent[Any])

#: Version of the digest format; a digest of another version is recomputed.
DIGEST_VERSION = 1
_COUNTS = ("n", "null", "nan", "inf", "true")
_TYPES = ("integral", "fractional", "boolean", "string", "object", "tensor")


class DigestError(ValueError):
    """Stored bytes are not a digest of this version."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


def _component_values(metric: Any, names: tuple[str, ...]) -> list[int]:
    return [int(getattr(metric, name).value) if hasattr(metric, name) else 0 for name in names]


def digest_column(column: ColumnProfileView) -> dict[str, Any]:
    """The digest of one column: only the metrics it has."""
    out: dict[str, Any] = {}
    counts = column.get_metric("counts")
    if counts is not None:
        out["counts"] = _component_values(counts, _COUNTS)
    types = column.get_metric("types")
    if types is not None:
        out["types"] = _component_values(types, _TYPES)
    distribution = column.get_metric("distribution")
    if distribution is not None and distribution.kll.value is not None:
        out["distribution"] = [
            float(distribution.mean.value),
            float(distribution.m2.value),
            _b64(distribution.kll.value.serialize()),
        ]
    cardinality = column.get_metric("cardinality")
    if cardinality is not None and cardinality.hll.value is not None:
        out["cardinality"] = _b64(cardinality.hll.value.serialize_compact())
    items = column.get_metric("frequent_items")
    if items is not None and items.frequent_strings.value is not None:
        out["frequent_items"] = _b64(items.frequent_strings.value.serialize())
    return out


def digest_view(view: DatasetProfileView) -> bytes:
    """The digest of a whole profile view, compressed."""
    columns = {name: digest_column(column) for name, column in view.get_columns().items() if column}
    payload = {"version": DIGEST_VERSION, "columns": columns}
    return zlib.compress(json.dumps(payload, separators=(",", ":"), allow_nan=True).encode("utf-8"), 1)


_PROTOTYPES: dict[type[MetricComponent[Any]], MetricComponent[Any]] = {}


def _component(kind: type[C], value: Any) -> C:
    """``kind(value)`` without whylogs' per-component set-up: a component's constructor looks its
    aggregator, serializer and deserializer up in fresh registries every time (most of the cost of
    rebuilding a view), and they are the same for every component of a kind, so a copy of one
    built the normal way is given the value instead."""
    prototype = _PROTOTYPES.get(kind)
    if prototype is None:
        prototype = kind(value)
        prototype.set(None)  # keeps no value of its own
        _PROTOTYPES[kind] = prototype
    component: C = copy.copy(prototype)
    component.set(value)
    return component


def _column_from_digest(data: dict[str, Any]) -> ColumnProfileView:
    metrics: dict[str, Metric] = {}
    if "counts" in data:
        n, null, nan, inf, true = data["counts"]
        metrics["counts"] = ColumnCountsMetric(
            n=_component(IntegralComponent, n),
            null=_component(IntegralComponent, null),
            nan=_component(IntegralComponent, nan),
            inf=_component(IntegralComponent, inf),
            true=_component(IntegralComponent, true),
        )
    if "types" in data:
        metrics["types"] = TypeCountersMetric(*(_component(IntegralComponent, v) for v in data["types"]))
    if "distribution" in data:
        mean, m2, kll = data["distribution"]
        metrics["distribution"] = DistributionMetric(
            kll=_component(KllComponent, ds.kll_doubles_sketch.deserialize(_unb64(kll))),
            mean=_component(FractionalComponent, mean),
            m2=_component(FractionalComponent, m2),
        )
    if "cardinality" in data:
        metrics["cardinality"] = CardinalityMetric(
            hll=_component(HllComponent, ds.hll_sketch.deserialize(_unb64(data["cardinality"])))
        )
    if "frequent_items" in data:
        metrics["frequent_items"] = FrequentItemsMetric(
            frequent_strings=_component(
                FrequentStringsComponent, ds.frequent_strings_sketch.deserialize(_unb64(data["frequent_items"]))
            )
        )
    return ColumnProfileView(metrics=metrics)


def view_from_digest(blob: bytes) -> DatasetProfileView:
    """The profile view a digest describes (the digested metrics only)."""
    try:
        payload = json.loads(zlib.decompress(blob))
    except (zlib.error, ValueError) as exc:
        raise DigestError(f"not a stored digest ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("version") != DIGEST_VERSION:
        raise DigestError("a digest of another version")
    columns = {name: _column_from_digest(data) for name, data in payload["columns"].items()}
    return DatasetProfileView(columns=columns, dataset_timestamp=None, creation_timestamp=None)


__all__ = ["DIGEST_VERSION", "DigestError", "digest_view", "view_from_digest"]
