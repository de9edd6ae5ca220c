"""A profile's *digest*: what the observatory needs of it, stored by the ingest worker so that no
page deserializes a profile twice. Pure logic, no I/O.

Digests are made in the sandbox process (``sandbox.py``) from uploaded bytes; the server's own
process only rebuilds views from digests, and checks each sketch of a digest
(``sketch_check.py``) before the sketch library deserializes it (:func:`view_of`).

For each column, the digest keeps the components of whylogs' standard metrics the pages use —
counts, type counters, the distribution (mean, m2 and the KLL sketch), cardinality (HLL sketch)
and frequent items (frequent-strings sketch) — with each sketch in its own serialized form.
:func:`view_from_digest` rebuilds a :class:`DatasetProfileView` of those metrics with their
constructors, which is many times faster than whylogs' generic deserialization, so summaries,
charts, merges and drift all keep using whylogs' own code on the rebuilt view.

:func:`digest_from_bytes` makes the same digest straight from serialized bytes: the columns whose
metrics have exactly the shape whylogs writes by default are read from their protobuf messages,
each sketch deserialized (and so checked) by the sketch library as whylogs would, without the
Python objects whylogs builds per metric component (most of the time of its deserialization);
any other column goes through whylogs' own column deserializer.
"""

from __future__ import annotations

import binascii
import json
import zlib
from collections.abc import Iterable, Sequence
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
from whylogs.core.proto import (
    ChunkHeader,
    ChunkMessage,
    ColumnMessage,
    DatasetProfileHeader,
    DatasetSegmentHeader,
    MetricComponentMessage,
)
from whylogs.core.view.column_profile_view import ColumnProfileView

from whylogs_songbird.column_stats import TYPE_NAMES, ColumnSketches, ProfileColumns
from whylogs_songbird.server.profile_check import _varint
from whylogs_songbird.server.sketch_check import (
    SketchCheckError,
    check_frequent_strings,
    check_hll,
    check_kll_doubles,
)

C = TypeVar("C", bound=MetricComponent[Any])

#: Version of the digest format; a digest of another version is recomputed.
DIGEST_VERSION = 1
_COUNTS = ("n", "null", "nan", "inf", "true")
_TYPES = TYPE_NAMES


class DigestError(ValueError):
    """Stored bytes are not a digest of this version."""


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")  # base64.b64encode, without its wrapper


def _unb64(text: str) -> bytes:
    return binascii.a2b_base64(text.encode("ascii"))  # base64.b64decode (not strict), without its wrapper


def _component_values(metric: Any, names: tuple[str, ...]) -> list[int]:
    return [int(getattr(metric, name).value) if hasattr(metric, name) else 0 for name in names]


def digest_column(column: ColumnProfileView, *, raw: bool = False) -> dict[str, Any]:
    """The digest of one column: only the metrics it has. ``raw``: each sketch as its bytes, not
    base64 text (for a binary layout, such as a rollup's; not JSON)."""
    text: Any = (lambda data: data) if raw else _b64
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
            text(distribution.kll.value.serialize()),
        ]
    cardinality = column.get_metric("cardinality")
    if cardinality is not None and cardinality.hll.value is not None:
        out["cardinality"] = text(cardinality.hll.value.serialize_compact())
    items = column.get_metric("frequent_items")
    if items is not None and items.frequent_strings.value is not None:
        out["frequent_items"] = text(items.frequent_strings.value.serialize())
    return out


def _pack(columns: dict[str, dict[str, Any]]) -> bytes:
    payload = {"version": DIGEST_VERSION, "columns": columns}
    return zlib.compress(json.dumps(payload, separators=(",", ":"), allow_nan=True).encode("utf-8"), 1)


def pack_digest(columns: dict[str, dict[str, Any]]) -> bytes:
    """The digest of digested columns whose sketches are their bytes (``raw``, as
    :func:`raw_view_columns` and :func:`raw_columns_from_bytes` give them): each sketch of the
    digest is base64 of exactly those bytes."""
    texts: dict[str, dict[str, Any]] = {}
    for name, data in columns.items():
        out = dict(data)
        if "distribution" in out:
            mean, m2, kll = out["distribution"]
            out["distribution"] = [mean, m2, _b64(kll)]
        for field in ("cardinality", "frequent_items"):
            if field in out:
                out[field] = _b64(out[field])
        texts[name] = out
    return _pack(texts)


def raw_view_columns(view: DatasetProfileView) -> dict[str, dict[str, Any]]:
    """The digested columns of a whole profile view, each sketch as its bytes (see :func:`pack_digest`)."""
    return {name: digest_column(column, raw=True) for name, column in view.get_columns().items() if column}


def digest_view(view: DatasetProfileView) -> bytes:
    """The digest of a whole profile view, compressed."""
    return _pack({name: digest_column(column) for name, column in view.get_columns().items() if column})


# -- the digest straight from serialized bytes -------------------------------------------------

#: The metrics of whylogs' default schema, each with its components exactly as whylogs writes them:
#: name -> (which value of the component message is set, type id). A column whose metrics all
#: match is digested from its messages; whylogs' deserializer would accept it, given valid sketches.
_DEFAULT_SHAPES: dict[str, dict[str, tuple[str, int]]] = {
    "counts": {name: ("n", 0) for name in _COUNTS},
    "types": {name: ("n", 0) for name in _TYPES},
    "distribution": {"mean": ("d", 0), "m2": ("d", 0), "kll": ("kll", 0)},
    "ints": {"max": ("n", 2), "min": ("n", 1)},
    "cardinality": {"hll": ("hll", 0)},
    "frequent_items": {"frequent_strings": ("frequent_items", 0)},
}


#: :data:`_DEFAULT_SHAPES` by component path (``metric/component``, as a profile header indexes them).
_DEFAULT_PATHS: dict[str, tuple[str, int]] = {
    f"{metric}/{name}": shape for metric, components in _DEFAULT_SHAPES.items() for name, shape in components.items()
}


class _NotDefaultShape(Exception):
    """A column's metrics are not whylogs' defaults: whylogs' own deserializer reads it."""


def _delimited(data: bytes, pos: int, message: Any) -> tuple[Any, int]:
    """Parse the length-delimited protobuf ``message`` at ``pos``; return it and the position after it."""
    size, pos = _varint(data, pos, len(data))
    end = pos + size
    if end > len(data):
        raise ValueError("a message runs past the end of the data")
    parsed = message()
    parsed.ParseFromString(data[pos:end])
    return parsed, end


def _default_column(components: dict[str, MetricComponentMessage]) -> dict[str, Any]:
    """What `digest_column` gives for this column (``raw``: each sketch as its bytes), read from
    its messages; `_NotDefaultShape` when its metrics are not exactly whylogs' defaults."""
    by_metric: dict[str, dict[str, MetricComponentMessage]] = {}
    for path, message in components.items():
        metric, _, component = path.partition("/")
        expected = _DEFAULT_PATHS.get(path)
        if expected is None or message.WhichOneof("value") != expected[0] or message.type_id != expected[1]:
            raise _NotDefaultShape(metric)
        by_metric.setdefault(metric, {})[component] = message
    for metric, found in by_metric.items():
        if len(found) != len(_DEFAULT_SHAPES[metric]):  # each one known: all of the metric's are there
            raise _NotDefaultShape(metric)
    out: dict[str, Any] = {}
    if "counts" in by_metric:
        out["counts"] = [int(by_metric["counts"][name].n) for name in _COUNTS]
    if "types" in by_metric:
        out["types"] = [int(by_metric["types"][name].n) for name in _TYPES]
    distribution = by_metric.get("distribution")
    if distribution is not None:
        kll = ds.kll_doubles_sketch.deserialize(distribution["kll"].kll.sketch)
        out["distribution"] = [float(distribution["mean"].d), float(distribution["m2"].d), kll.serialize()]
    if "cardinality" in by_metric:
        hll = ds.hll_sketch.deserialize(by_metric["cardinality"]["hll"].hll.sketch)
        out["cardinality"] = hll.serialize_compact()
    if "frequent_items" in by_metric:
        items = ds.frequent_strings_sketch.deserialize(
            by_metric["frequent_items"]["frequent_strings"].frequent_items.sketch
        )
        out["frequent_items"] = items.serialize()
    return out


def digest_from_bytes(data: bytes) -> bytes:
    """The digest of a serialized profile (plain or segmented whylogs format), equal to
    ``digest_view(DatasetProfileView.deserialize(data))``; raises (any exception) where that
    deserialization might fail or differ, so the caller can ask whylogs instead."""
    return pack_digest(raw_columns_from_bytes(data))


def raw_columns_from_bytes(data: bytes) -> dict[str, dict[str, Any]]:
    """:func:`digest_from_bytes` before it is packed: the digested columns, each sketch as its
    bytes (see :func:`pack_digest`)."""
    if data[:4] != b"WHY1":
        raise ValueError("no whylogs magic bytes")
    _, pos = _delimited(data, 4, DatasetSegmentHeader)
    header, body = _delimited(data, pos, DatasetProfileHeader)
    if header.ByteSize() == 0:
        raise ValueError("no dataset profile header")
    paths = dict(header.indexed_metric_paths)  # a plain dict: looked up for every component
    columns: dict[str, dict[str, Any]] = {}
    for name in sorted(header.column_offsets.keys()):
        components: dict[str, MetricComponentMessage] = {}
        for offset in header.column_offsets[name].offsets:
            chunk_header, start = _delimited(data, body + offset, ChunkHeader)
            if chunk_header.type != ChunkHeader.ChunkType.COLUMN or start + chunk_header.length > len(data):
                raise ValueError("not a column chunk")
            chunk = ChunkMessage()
            chunk.ParseFromString(data[start : start + chunk_header.length])
            for index, component in chunk.metric_components.items():
                path = paths.get(index)
                if path is None:
                    raise ValueError(f"metric index {index} is not in the header")  # whylogs refuses it too
                components[path] = component
        try:
            columns[name] = _default_column(components)
        except _NotDefaultShape:
            column = ColumnProfileView.from_protobuf(ColumnMessage(metric_components=components))
            columns[name] = digest_column(column, raw=True)
    return columns


_PROTOTYPES: dict[type[MetricComponent[Any]], MetricComponent[Any]] = {}


def _component(kind: type[C], value: Any) -> C:
    """``kind(value)`` without whylogs' per-component set-up: a component's constructor looks its
    aggregator, serializer and deserializer up in fresh registries every time (most of the cost of
    rebuilding a view), and they are the same for every component of a kind, so a copy of one
    built the normal way (its attributes, shallow) is given the value instead."""
    prototype = _PROTOTYPES.get(kind)
    if prototype is None:
        prototype = kind(value)
        prototype.set(None)  # keeps no value of its own
        _PROTOTYPES[kind] = prototype
    component: C = object.__new__(kind)  # what copy.copy makes, without its generic protocol
    component.__dict__.update(prototype.__dict__)
    component.set(value)
    return component


def sketch_bytes(value: str | bytes) -> bytes:
    """A digested sketch: base64 text (a digest) or its bytes (a binary layout, ``raw``)."""
    return value if isinstance(value, bytes) else _unb64(value)


def _checked(data: dict[str, Any]) -> dict[str, bytes]:
    """The sketch bytes of one digested column, each checked (``sketch_check.py``) before the
    sketch library may see it: a digest holds only sketches the sandbox re-serialized, and this
    makes sure of it again in the server's process. Raises :class:`DigestError`."""
    sketches: dict[str, bytes] = {}
    try:
        if "distribution" in data:
            sketches["kll"] = sketch_bytes(data["distribution"][2])
            check_kll_doubles(sketches["kll"])
        if "cardinality" in data:
            sketches["hll"] = sketch_bytes(data["cardinality"])
            check_hll(sketches["hll"])
        if "frequent_items" in data:
            sketches["fi"] = sketch_bytes(data["frequent_items"])
            check_frequent_strings(sketches["fi"])
    except (SketchCheckError, ValueError, TypeError, IndexError) as exc:
        raise DigestError(f"a stored summary holds a sketch this server does not read ({exc})") from None
    return sketches


#: Each digested sketch's deserializer, by its key in :func:`_checked`'s result.
_DESERIALIZE: dict[str, Any] = {
    "kll": ds.kll_doubles_sketch.deserialize,
    "hll": ds.hll_sketch.deserialize,
    "fi": ds.frequent_strings_sketch.deserialize,
}


def _sketch_objects(data: dict[str, Any]) -> dict[str, Any]:
    """The sketches of one digested column as the sketch library's objects, ``kll``, ``hll`` and
    ``fi`` (those it has), each checked (:func:`_checked`) before it is deserialized."""
    return {key: _DESERIALIZE[key](raw) for key, raw in _checked(data).items()}


def _own_objects(data: dict[str, Any]) -> dict[str, Any]:
    """:func:`_sketch_objects` of a digested column whose sketches this process's sketch library
    serialized itself (a merge it made, never bytes it read from a store or a child): they are
    deserialized without the check."""
    found: dict[str, Any] = {}
    if "distribution" in data:
        found["kll"] = ds.kll_doubles_sketch.deserialize(sketch_bytes(data["distribution"][2]))
    if "cardinality" in data:
        found["hll"] = ds.hll_sketch.deserialize(sketch_bytes(data["cardinality"]))
    if "frequent_items" in data:
        found["fi"] = ds.frequent_strings_sketch.deserialize(sketch_bytes(data["frequent_items"]))
    return found


def sketches_of(data: dict[str, Any]) -> dict[str, bytes]:
    """The checked sketch bytes of one digested column: ``kll``, ``hll`` and ``fi`` (those it has);
    raises :class:`DigestError`."""
    return _checked(data)


def check_digest(blob: bytes) -> None:
    """Raise :class:`DigestError` unless every sketch of the digest ``blob`` passes the sketch check."""
    for data in digest_columns(blob).values():
        _checked(data)


def _column_from_digest(data: dict[str, Any]) -> ColumnProfileView:
    metrics: dict[str, Metric] = {}
    sketches = _sketch_objects(data)
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
        mean, m2, _ = data["distribution"]
        metrics["distribution"] = DistributionMetric(
            kll=_component(KllComponent, sketches["kll"]),
            mean=_component(FractionalComponent, mean),
            m2=_component(FractionalComponent, m2),
        )
    if "cardinality" in data:
        metrics["cardinality"] = CardinalityMetric(hll=_component(HllComponent, sketches["hll"]))
    if "frequent_items" in data:
        metrics["frequent_items"] = FrequentItemsMetric(
            frequent_strings=_component(FrequentStringsComponent, sketches["fi"])
        )
    return ColumnProfileView(metrics=metrics)


def digest_columns(blob: bytes) -> dict[str, Any]:
    """The digested data of each column, by name in the profile's column order; DigestError when
    ``blob`` is not a digest of this version. Build views of some or all of them with :func:`view_of`."""
    try:
        payload = json.loads(zlib.decompress(blob))
    except (zlib.error, ValueError) as exc:
        raise DigestError(f"not a stored digest ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or payload.get("version") != DIGEST_VERSION:
        raise DigestError("a digest of another version")
    columns: dict[str, Any] = payload["columns"]
    return columns


def view_of(columns: dict[str, Any], names: Iterable[str] | None = None) -> DatasetProfileView:
    """A view of the digested ``columns`` named (default: all of them, in order); a name the
    digest does not have is left out. Rebuilding costs per column, so a page rebuilds only its own."""
    chosen = columns if names is None else {name: columns[name] for name in names if name in columns}
    built = {name: _column_from_digest(data) for name, data in chosen.items()}
    return DatasetProfileView(columns=built, dataset_timestamp=None, creation_timestamp=None)


class _MergedColumn:
    """One column being merged from digested columns: each metric as whylogs' merge keeps it
    (counts as lists, the distribution's mean and m2 as floats, sketches as sketch objects)."""

    __slots__ = ("counts", "types", "distribution", "hll", "fi")

    def __init__(self, data: dict[str, Any], own: bool = False) -> None:
        sketches = _own_objects(data) if own else _sketch_objects(data)
        self.counts: list[int] | None = [int(v) for v in data["counts"]] if "counts" in data else None
        self.types: list[int] | None = [int(v) for v in data["types"]] if "types" in data else None
        self.distribution: tuple[float, float, Any] | None = None
        if "distribution" in data:
            mean, m2, _ = data["distribution"]
            self.distribution = (mean, m2, sketches["kll"])
        self.hll = sketches.get("hll")
        self.fi = sketches.get("fi")

    def merge(self, other: _MergedColumn) -> None:
        """Merge ``other`` (a later profile's column) into this one, with the arithmetic of whylogs'
        aggregators and ``DistributionMetric.merge``; a metric only one side has is kept as it is."""
        self.counts = _summed(self.counts, other.counts)
        self.types = _summed(self.types, other.types)
        if self.distribution is None or other.distribution is None:
            self.distribution = self.distribution or other.distribution
        else:
            (a_mean, a_m2, a_kll), (b_mean, b_m2, b_kll) = self.distribution, other.distribution
            a_n, b_n = a_kll.get_n(), b_kll.get_n()
            delta = b_mean - a_mean
            new_n = a_n + b_n
            if a_n != 0 or b_n != 0:
                m2 = a_m2 + b_m2 + delta**2 * a_n * b_n / new_n
                mean = (a_n / new_n) * a_mean + (b_n / new_n) * b_mean
            else:
                m2, mean = 0, 0
            a_kll.merge(b_kll)  # this column's own sketch: whylogs merges into a copy of it
            self.distribution = (mean, m2, a_kll)
        if self.hll is None or other.hll is None:
            self.hll = self.hll or other.hll
        else:
            target = self.hll.tgt_type if self.hll.tgt_type.value >= other.hll.tgt_type.value else other.hll.tgt_type
            union = ds.hll_union(max(self.hll.lg_config_k, other.hll.lg_config_k))
            union.update(self.hll)
            union.update(other.hll)
            self.hll = union.get_result(target)
        if self.fi is None or other.fi is None:
            self.fi = self.fi or other.fi
        else:
            self.fi.merge(other.fi)

    def digested(self, raw: bool = False) -> dict[str, Any]:
        """The digest of the merged column (as :func:`digest_column` writes it, ``raw`` too)."""
        text: Any = (lambda data: data) if raw else _b64
        out: dict[str, Any] = {}
        if self.counts is not None:
            out["counts"] = self.counts
        if self.types is not None:
            out["types"] = self.types
        if self.distribution is not None:
            mean, m2, kll = self.distribution
            out["distribution"] = [float(mean), float(m2), text(kll.serialize())]
        if self.hll is not None:
            out["cardinality"] = text(self.hll.serialize_compact())
        if self.fi is not None:
            out["frequent_items"] = text(self.fi.serialize())
        return out


def _summed(left: list[int] | None, right: list[int] | None) -> list[int] | None:
    if left is None or right is None:
        return left if right is None else right
    if len(left) != len(right):
        raise DigestError("a stored summary holds counters of another shape")
    return [a + b for a, b in zip(left, right)]


def merge_digested(
    profiles: Sequence[dict[str, Any]], *, raw: bool = False, own: Sequence[bool] = ()
) -> dict[str, Any]:
    """The digested columns (:func:`digest_columns`' form) of the merge of several profiles' digested
    columns, in that order: the numbers of ``merge_views`` over their views (counts, means and
    estimates exactly; KLL quantiles within the sketch's error, as two whylogs merges differ), made
    straight from the sketches, without building whylogs' metric objects (most of a merge's cost).
    Each sketch is checked before the sketch library reads it; raises :class:`DigestError`.
    ``raw``: each sketch of the result as its bytes (``digest_column``'s ``raw``). ``own``: for
    each profile, whether its sketches are bytes this process's sketch library serialized itself
    (a merge it made and kept in memory), or the very objects a merge of this process checked
    already: those are not checked again."""
    merged: dict[str, _MergedColumn] = {}
    for index, columns in enumerate(profiles):
        mine = index < len(own) and own[index]
        for name, data in columns.items():
            column = _MergedColumn(data, mine)
            if name in merged:
                merged[name].merge(column)
            else:
                merged[name] = column
    return {name: column.digested(raw) for name, column in merged.items()}


def _sketches_from_digest(data: dict[str, Any]) -> ColumnSketches:
    """What :func:`_column_from_digest` builds, as :class:`ColumnSketches` (each sketch checked)."""
    sketches = _sketch_objects(data)
    counts, types, distribution = data.get("counts"), data.get("types"), data.get("distribution")
    return ColumnSketches(
        counts=None if counts is None else (int(counts[0]), int(counts[1])),
        type_counts=None if types is None else dict(zip(_TYPES, (int(v) for v in [*types, *[0] * len(_TYPES)]))),
        kll=sketches.get("kll"),
        mean=None if distribution is None else distribution[0],
        m2=None if distribution is None else distribution[1],
        hll=sketches.get("hll"),
        frequent=sketches.get("fi"),
        standard=counts is not None,
    )


def columns_of(columns: dict[str, Any]) -> ProfileColumns:
    """The digested ``columns`` as :class:`ProfileColumns`: the numbers the timeline reads of each,
    from its sketches straight (checked as :func:`view_of` checks them, DigestError), without the
    whylogs objects of a view; the view is built only if asked for (``view(names)``)."""
    built = {name: _sketches_from_digest(data) for name, data in columns.items()}

    def view(names: Sequence[str] | None) -> DatasetProfileView:
        return view_of(columns, names)

    return ProfileColumns(built, view, all(column.standard for column in built.values()))


def digested_count(data: dict[str, Any]) -> int | None:
    """A digested column's count of values (whylogs' ``counts/n``), None without the counts metric."""
    counts = data.get("counts")
    return None if counts is None else int(counts[0])


def view_from_digest(blob: bytes) -> DatasetProfileView:
    """The profile view a digest describes (the digested metrics only)."""
    return view_of(digest_columns(blob))


__all__ = [
    "DIGEST_VERSION",
    "DigestError",
    "check_digest",
    "columns_of",
    "digest_columns",
    "digest_from_bytes",
    "digest_view",
    "merge_digested",
    "pack_digest",
    "raw_columns_from_bytes",
    "raw_view_columns",
    "sketch_bytes",
    "sketches_of",
    "digested_count",
    "view_from_digest",
    "view_of",
]
