"""From whylogs objects to upload items: (prepared view, timestamp in ms, segment tags, alias).

Everything whylogs calls a Writable is accepted: ``DatasetProfile``, ``DatasetProfileView``,
``SegmentedDatasetProfileView`` and every ``ResultSet`` (segmented included). Views are prepared
as whylogs prepares them for WhyLabs (compound metrics uncompounded) and serialized once.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeAlias

from whylogs.api.logger.result_set import ResultSet, SegmentedResultSet
from whylogs.core import DatasetProfile, DatasetProfileView
from whylogs.core.segmentation_partition import SegmentationPartition
from whylogs.core.view.segmented_dataset_profile_view import SegmentedDatasetProfileView
from whylogs.migration.uncompound import FeatureFlags, _uncompound_dataset_profile

from whylogs_songbird.errors import ConfigError, EmptyProfileError, ProfileError
from whylogs_songbird.models import MAX_ALIAS_LENGTH, SegmentTag

logger = logging.getLogger(__name__)

AnyView: TypeAlias = DatasetProfileView | SegmentedDatasetProfileView
#: Anything `items_from` accepts.
Profileish: TypeAlias = DatasetProfile | DatasetProfileView | SegmentedDatasetProfileView | ResultSet

#: Epoch milliseconds below this (3 March 1973) are taken for seconds given by mistake.
MIN_MILLIS = 100_000_000_000
#: How far into the future a dataset timestamp may be.
MAX_FUTURE_MS = 366 * 24 * 3600 * 1000
_SEGMENT_TAG_PREFIX = "whylogs.tag."


@dataclass(frozen=True)
class ProfileItem:
    """One profile to upload: its bytes are made once, on first use, and kept."""

    view: AnyView
    dataset_timestamp: int
    segment_tags: tuple[SegmentTag, ...] = ()
    alias: str | None = None
    _data: list[bytes] = field(default_factory=list, repr=False, compare=False)

    @property
    def is_reference(self) -> bool:
        return self.alias is not None

    @property
    def segment_label(self) -> str:
        """``key=value,...`` for a segment, empty for a whole-dataset profile."""
        return ",".join(f"{t.key}={t.value}" for t in self.segment_tags)

    def serialize(self) -> bytes:
        if not self._data:
            self._data.append(serialize_view(self.view))
        return self._data[0]


@contextlib.contextmanager
def segment_warning_silenced() -> Iterator[None]:
    """Around ``why.log(df, schema=<segments>)``: hide the one pandas FutureWarning whylogs causes for
    every segment ("When grouping with a length-1 list-like ..."), which the user cannot act on.
    Only that warning, only from whylogs' segment code, only inside this block."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message="When grouping with a length-1 list-like",
            category=FutureWarning,
            module=r"whylogs\.api\.logger\.segment_processing",
        )
        yield


def serialize_view(view: AnyView) -> bytes:
    """The bytes whylogs writes for this view (segments in whylogs' segmented format).

    A plain view gives exactly the bytes of ``view.serialize()``, without its extra copy: that
    reads its buffer into new bytes (twice the profile's size at the peak), ``getvalue()`` hands
    the buffer over.
    """
    buffer = io.BytesIO()
    if isinstance(view, SegmentedDatasetProfileView):
        buffer.name = "<memory>"  # whylogs' segmented writer reads the file's name
        view._write(file=buffer)
    else:
        view._do_write(buffer)
    return buffer.getvalue()


def read_profile_file(path: str | Path) -> DatasetProfileView:
    """A serialized whylogs profile from disk, or `ProfileError` saying what is wrong."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ProfileError(f"{path}: no such file.") from None
    except IsADirectoryError:
        raise ProfileError(f"{path} is a directory, not a profile file.") from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read it ({exc.strerror}).") from None
    try:
        return DatasetProfileView.deserialize(data)
    except Exception as exc:  # whylogs raises many kinds on garbage input
        raise ProfileError(
            f"{path} is not a serialized whylogs profile ({type(exc).__name__}); "
            "write one with why.log(df).view().write(path) or profile.view().serialize()."
        ) from None


def to_millis(value: datetime | int | float, *, what: str = "dataset_timestamp") -> int:
    """Epoch milliseconds (UTC) from a datetime or a number of ms; refuses seconds, pre-1970 and far-future."""
    if isinstance(value, bool):
        raise ConfigError(f"{what} must be a datetime or epoch milliseconds, not {value!r}.")
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        millis = int(round(moment.timestamp() * 1000))
    elif isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{what} must be a finite number of epoch milliseconds, not {value!r}.")
        millis = int(value)
        if 0 < millis < MIN_MILLIS:
            raise ConfigError(
                f"{what}={value} looks like epoch seconds; songbird wants epoch milliseconds: use {millis * 1000}."
            )
    else:
        raise ConfigError(f"{what} must be a datetime or epoch milliseconds, not {type(value).__name__}.")
    if millis < 0:
        raise ConfigError(f"{what}={value!r} is before 1970: give a time after 1970-01-01 UTC.")
    if millis > time.time() * 1000 + MAX_FUTURE_MS:
        raise ConfigError(f"{what}={value!r} is more than a year in the future: check the clock or the units.")
    return millis


def check_alias(alias: Any) -> str:
    """A usable reference profile name, or `ConfigError`."""
    if not isinstance(alias, str) or not alias.strip():
        raise ConfigError("A reference profile name must be a non-empty string.")
    if len(alias) > MAX_ALIAS_LENGTH:
        raise ConfigError(f"A reference profile name can be at most {MAX_ALIAS_LENGTH} characters, not {len(alias)}.")
    if any(ord(ch) < 32 for ch in alias):
        raise ConfigError("A reference profile name must not contain control characters (newlines, tabs...).")
    return alias


def prepare_view(view: DatasetProfileView) -> DatasetProfileView:
    """Uncompound compound metrics, as whylogs does before sending to WhyLabs."""
    return _uncompound_dataset_profile(view, FeatureFlags(uncompound_condition_count=True))


def _segment_tags(view: SegmentedDatasetProfileView) -> tuple[SegmentTag, ...]:
    partition: SegmentationPartition = view.partition
    mapper = partition.mapper
    if mapper is not None and mapper.col_names and len(mapper.col_names) == len(view.segment.key):
        return tuple(SegmentTag(key=k, value=str(v)) for k, v in zip(mapper.col_names, view.segment.key))
    # Segments made by a custom mapper: fall back to the partition name.
    name = partition.name or "segment"
    return tuple(
        SegmentTag(key=name if i == 0 else f"{name}.{i}", value=str(v)) for i, v in enumerate(view.segment.key)
    )


def _check_not_empty(view: DatasetProfileView, label: str) -> None:
    columns = view.get_columns()
    if not columns:
        raise EmptyProfileError(
            f"{label} has no columns: log some data first, e.g. why.log(df) with a non-empty DataFrame."
        )
    for column in columns.values():
        counts = column.get_metric("counts")
        if counts is None or counts.n.value > 0:
            return
    raise EmptyProfileError(f"{label} is empty (0 rows in every column): log some data before publishing it.")


def _views_of(obj: Any) -> list[AnyView]:
    if isinstance(obj, SegmentedResultSet):
        writables = obj.get_writables() or []
        return [w for w in writables if isinstance(w, SegmentedDatasetProfileView)]
    if isinstance(obj, ResultSet):
        view = obj.view()
        return [view] if view is not None else []
    if isinstance(obj, DatasetProfile):
        return [obj.view()]
    if isinstance(obj, DatasetProfileView | SegmentedDatasetProfileView):
        return [obj]
    if isinstance(obj, str | Path):
        return [read_profile_file(obj)]
    raise ProfileError(
        f"Cannot publish a {type(obj).__name__}: give a whylogs profile, profile view or result set, "
        "e.g. why.log(df) or why.log(df).view()."
    )


def items_from(
    obj: Profileish | str | Path,
    *,
    dataset_timestamp: datetime | int | None = None,
    reference_profile_name: str | None = None,
    now_ms: int | None = None,
) -> list[ProfileItem]:
    """Upload items for ``obj``: one per profile, one per segment for segmented results.

    ``reference_profile_name`` makes them reference profiles; segments of a reference are aliased
    ``<name>[<key>=<value>,...]``. ``dataset_timestamp`` overrides the profile's own timestamp;
    a profile with none gets now (UTC).
    """
    alias = check_alias(reference_profile_name) if reference_profile_name is not None else None
    override = to_millis(dataset_timestamp) if dataset_timestamp is not None else None
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    views = _views_of(obj)
    if not views:
        raise ProfileError(f"The {type(obj).__name__} holds no profiles: log some data first.")
    if override is None and isinstance(obj, SegmentedResultSet):
        # The segments of one batch share its timestamp, so that one link shows the whole batch.
        first = views[0].dataset_timestamp
        override = to_millis(first) if first is not None else now
    items = []
    for view in views:
        if isinstance(view, SegmentedDatasetProfileView):
            inner = view.profile_view
            tags = _segment_tags(view)
        else:
            inner, tags = view, ()
        _check_not_empty(inner, f"The {type(obj).__name__}" + (f" segment {tags}" if tags else ""))
        own = inner.dataset_timestamp
        stamp = override if override is not None else (to_millis(own) if own is not None else now)
        prepared = prepare_view(inner)
        if isinstance(view, SegmentedDatasetProfileView):
            prepared_view: AnyView = SegmentedDatasetProfileView(
                profile_view=prepared, segment=view.segment, partition=view.partition
            )
            prepared_view.metadata.update(view.metadata)
        else:
            prepared_view = prepared
        item_alias = alias
        if alias is not None and tags:
            item_alias = f"{alias}[{','.join(f'{t.key}={t.value}' for t in tags)}]"
        items.append(ProfileItem(view=prepared_view, dataset_timestamp=stamp, segment_tags=tags, alias=item_alias))
    return items


def reference_items(references: Iterable[tuple[str, Profileish | str | Path]], **kwargs: Any) -> list[ProfileItem]:
    """Items for several named references; aliases must be unique."""
    items: list[ProfileItem] = []
    seen: set[str] = set()
    for name, obj in references:
        for item in items_from(obj, reference_profile_name=name, **kwargs):
            if item.alias in seen:
                raise ConfigError(f"The reference name {item.alias!r} is given twice: reference names must be unique.")
            seen.add(item.alias or "")
            items.append(item)
    return items


def format_ms(epoch_ms: int) -> str:
    """A dataset timestamp for people: the UTC date, with the time unless it is midnight."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=timezone.utc)
    if (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0):
        return f"{moment:%Y-%m-%d}"
    return f"{moment:%Y-%m-%d %H:%M:%S}Z"
