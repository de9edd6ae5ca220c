"""Per-bucket rollups of a session's batch profiles, and the session's timeline version, so that a
timeline view costs with its buckets, not with the session's history.

A *rollup* is the merge of the batch profiles of one UTC hour or day of one session (and one
segment, or every segment), stored as digested columns (``digest.py``, the form summaries are
stored in, without the compression: sketches hardly compress, and it cost more than the merge)
in the session's derived artefacts under ``timeline/r/<hour|day>/<bucket start>/<family>``, with a
header naming its members (dataset timestamp, identity, upload id, sha256) in merge order and its
column names. Weeks and months are merged from their days' rollups.

- **As batches land**: the ingest worker calls :func:`note_summarised_many` with the batches whose
  summaries it stored (:func:`summary_changing` just before each), as soon as nothing is pending or
  :data:`~whylogs_songbird.server.ingest.ROLLUP_BATCH` wait; it merges the new batches into the rollups of
  their hour and day, each bucket once (an append when the batch sorts after every member, as merging all of them in
  order does; otherwise, such as a late batch within its bucket or a replaced upload, that one
  bucket is merged again from its members' summaries). Only that batch's buckets are touched.
- **At view time** (:meth:`Rollups.bucket_rollup`): a rollup is used only when its members are
  exactly the bucket's batches (the bucket's content key). Otherwise (no rollup yet, for data
  stored before rollups existed; two hosts that updated one bucket at once, where the later write
  wins and loses the other's batch; a deleted profile) the bucket is merged from its profiles and
  its rollup stored again. So a rollup is never trusted beyond its members, whatever the races
  between hosts, and a missing rollup is rebuilt from the profiles.
- **On deletion**: the store drops the rollups of the deleted profile's hour and day (its data
  leaves with it), and the session's other derived values except the other rollups.

The numbers are those of merging the bucket's profiles: counts, means, extremes, distinct and
frequent-item estimates exactly; quantiles within the KLL sketch's error (whylogs' KLL merge
compacts at random, so two merges of the same profiles differ within it, today as before).

The *version* (:func:`bump_version`, :func:`read_version`) is a random token under
``timeline/version``, replaced whenever what a view shows may change: an upload recorded (by the
store, in the transaction that records it), a summary about to be stored or a profile about to be
marked invalid (before it shows: a view of the new version sees the profile pending, and stores no
document, or done), a profile deleted, a transaction committed. A stored timeline document carries
the version it was built at, so a stored view is two reads, whatever the session's size.
"""

from __future__ import annotations

import functools
import json
import logging
import struct
import sys
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, cast

import numpy as np
import whylogs_sketching as ds
from whylogs.core import DatasetProfileView

from whylogs_songbird.column_stats import (
    KS_POINTS,
    KnownQuantiles,
    ProfileColumns,
    Split,
    known_quantiles,
    merge_views,
    sketch_quantiles,
)
from whylogs_songbird.server.common import segment_label
from whylogs_songbird.server.digest import (
    DigestError,
    columns_of,
    digest_column,
    digest_columns,
    merge_digested,
    sketch_bytes,
    view_of,
)
from whylogs_songbird.server.storage.base import TIMELINE_VERSION_KEY, DerivedWrite, new_version
from whylogs_songbird.timeline import BAND_QUANTILES, DAY_MS, HOUR_MS, Bucket, bucket_bounds, content_key

logger = logging.getLogger("whylogs_songbird.server.rollups")

#: Keys of stored rollups start with this (``timeline/r/<granularity>/<start>/<family>``).
ROLLUP_PREFIX = "timeline/r/"
#: The key of a session's timeline version (the store replaces it itself when it records an upload).
VERSION_KEY = TIMELINE_VERSION_KEY
#: The granularities kept as rollups; coarser ones are merged from days.
ROLLED = ("hour", "day")
#: The family of rollups over every segment (what a view without a segment shows).
ALL_SEGMENTS = "all"
_FORMAT = 1
#: In a header, what follows its last member (member fields are numbers and ids: never a quote),
#: once: JSON text of the names after it cannot hold it (a quote in a name is escaped).
_MEMBERS_END = b'],"names":'


class Artefacts(Protocol):
    """A session's derived values (``MetadataStore.get_derived``/``put_derived``/``drop_derived``)."""

    def get_derived(self, session_id: str, key: str) -> bytes | None: ...

    def put_derived(self, session_id: str, key: str, data: bytes) -> None: ...

    def drop_derived(self, session_id: str, prefix: str, keep: str | None = None) -> int: ...


# -- the version ---------------------------------------------------------------------------------


def bump_version(artefacts: Artefacts, session_id: str) -> None:
    """Replace the session's timeline version: every stored document of it is out of date."""
    artefacts.put_derived(session_id, VERSION_KEY, new_version())


def read_version(artefacts: Artefacts, session_id: str) -> str:
    """The session's timeline version ("" when none was made yet, or it was dropped with the session's
    derived values: a document stored at "" is then out of date at the next change)."""
    found = artefacts.get_derived(session_id, VERSION_KEY)
    return found.decode("ascii", "replace") if found is not None else ""


# -- keys ----------------------------------------------------------------------------------------


def family_of(segment: str | None) -> str:
    """The rollup family of a view's segment: :data:`ALL_SEGMENTS` for none, else a digest of it."""
    return ALL_SEGMENTS if not segment else content_key([segment])[:16]


def rollup_key(granularity: str, start: int, family: str) -> str:
    return f"{ROLLUP_PREFIX}{granularity}/{start}/{family}"


def bucket_prefixes(timestamp: int) -> list[str]:
    """The key prefixes of the rollups a batch of ``timestamp`` is part of (its hour and its day, every
    family): what deleting it drops."""
    hour = timestamp - timestamp % HOUR_MS
    day = timestamp - timestamp % DAY_MS
    return [f"{ROLLUP_PREFIX}hour/{hour}/", f"{ROLLUP_PREFIX}day/{day}/"]


# -- rollups -------------------------------------------------------------------------------------


class Member(NamedTuple):
    """One batch of a rollup: merged in the order of (timestamp, identity), as a bucket's batches are.
    (A named tuple: a rollup's header names every member of its bucket, and reading or writing it
    built one object per member on every batch that landed.)"""

    timestamp: int
    identity: str
    upload_id: str
    sha256: str

    @property
    def order(self) -> tuple[int, str]:
        return (self.timestamp, self.identity)


#: The merged columns of a rollup start with this, then a u32 (little-endian) length of a JSON
#: header: each column's digest (``digest.digest_column``) with the byte length of each sketch in
#: place of its base64 text; then the sketches' bytes, in the header's order. Reading one costs no
#: base64 and no scan of long JSON strings (most of reading a rollup stored as a JSON digest, as
#: rollups were stored before: those are read too).
BINARY_MAGIC = b"SBR1"
#: The same layout with each KLL sketch's :class:`~whylogs_songbird.column_stats.KnownQuantiles`
#: after the last sketch (what a view takes of every bucket's sketches: taken once, as the rollup
#: is written): a column's header entry then holds ``"q": [values, split points]`` (their counts),
#: and the bytes are the values, the split's points and the split's CDF, as little-endian doubles.
#: Rollups of either layout (and JSON digests, as rollups were stored before) are read.
KNOWN_MAGIC = b"SBR2"
_SKETCH_FIELDS = ("distribution", "cardinality", "frequent_items")
_KNOWN_FIELD = "q"
_U32 = struct.Struct("<I")


def pack_columns(columns: Mapping[str, Mapping[str, Any]], *, known: bool = False) -> bytes:
    """Digested columns in the binary layout of :data:`BINARY_MAGIC` (best with each sketch as its
    bytes, ``digest_column(..., raw=True)``; base64 text is decoded); ``known``: with each KLL
    sketch's known quantiles, in the layout of :data:`KNOWN_MAGIC`."""
    return pack_stored(columns, known=known)[0]


def pack_stored(columns: Mapping[str, Mapping[str, Any]], *, known: bool = False) -> tuple[bytes, dict[str, Any]]:
    """:func:`pack_columns`, and the columns as :func:`unpack_columns` reads them back from those
    bytes (each sketch as the bytes stored: a KLL sketch whose known quantiles were taken is
    stored sorted), without reading them."""
    header: dict[str, dict[str, Any]] = {}
    stored: dict[str, Any] = {}
    sketches: list[bytes] = []
    extra: list[bytes] = []
    for name, data in columns.items():
        entry = dict(data)
        entry.pop(_KNOWN_FIELD, None)
        back = dict(entry)
        for field in list(entry):
            if field == "distribution":
                mean, m2, sketch = entry[field]
                kll = sketch_bytes(sketch)
                found, kll = _known_of(kll) if known else (None, kll)
                sketches.append(kll)
                entry[field] = [mean, m2, len(kll)]
                back[field] = [mean, m2, kll]
                if found is not None:
                    points = found.split.points if found.split is not None else []
                    cdf = found.split.cdf if found.split is not None else []
                    entry[_KNOWN_FIELD] = [len(found.values), len(points)]
                    extra.append(_doubles(found.values) + _doubles(points) + _doubles(cdf))
            elif field in _SKETCH_FIELDS:
                sketches.append(sketch_bytes(entry[field]))
                entry[field] = len(sketches[-1])
                back[field] = sketches[-1]
        header[name] = entry
        stored[name] = back
    text = json.dumps(header, separators=(",", ":"), allow_nan=True).encode()
    magic = KNOWN_MAGIC if known else BINARY_MAGIC
    return b"".join([magic, _U32.pack(len(text)), text, *sketches, *extra]), stored


#: The fractions of the known quantiles a rollup stores.
_FRACTIONS = (*KS_POINTS, *BAND_QUANTILES)


def _doubles(values: Sequence[float] | np.ndarray) -> bytes:
    return struct.pack(f"<{len(values)}d", *values)


def _doubles_at(data: bytes, start: int, count: int) -> list[float]:
    """``count`` little-endian doubles of ``data`` from ``start`` (in range), as a list."""
    if sys.byteorder == "little":  # the machine's own layout: one cast, no parse
        return cast("list[float]", memoryview(data)[start : start + 8 * count].cast("d").tolist())
    return list(struct.unpack_from(f"<{count}d", data, start))


def _known_of(kll: bytes) -> tuple[KnownQuantiles | None, bytes]:
    """The known quantiles of a KLL sketch (its bytes, made by this server's merge), at the KS
    test's points and the column points' band, and the sketch's bytes once they were taken: the
    same items, with its first level sorted (and marked so). A sketch read from those bytes takes
    a CDF in a few microseconds, where an unsorted first level costs ten times that: taking the
    quantiles sorts it in place, and the view no longer takes them."""
    try:
        sketch = ds.kll_doubles_sketch.deserialize(kll)
    except (RuntimeError, ValueError, IndexError):  # a short buffer raises IndexError
        return None, kll
    found = known_quantiles(sketch, BAND_QUANTILES)
    return found, kll if found is None else sketch.serialize()


def unpack_columns(data: bytes) -> dict[str, Any]:
    """The digested columns of :func:`pack_columns`' bytes, each sketch as its bytes (not checked
    yet: ``digest.view_of`` and ``columns_of`` check them); a JSON digest's columns as they are.
    Raises :class:`~whylogs_songbird.server.digest.DigestError` for bytes of neither layout."""
    return unpack_known(data)[0]


def unpack_known(data: bytes) -> tuple[dict[str, Any], dict[str, KnownQuantiles]]:
    """:func:`unpack_columns`, and the known quantiles of the columns that have them (none but in
    the layout of :data:`KNOWN_MAGIC`)."""
    magic = data[: len(BINARY_MAGIC)]
    if magic not in (BINARY_MAGIC, KNOWN_MAGIC):
        try:
            columns: dict[str, Any] = json.loads(data)
        except ValueError:
            raise DigestError("stored rollup columns that are neither binary nor JSON") from None
        return columns, {}
    known: dict[str, KnownQuantiles] = {}
    try:
        (size,) = _U32.unpack_from(data, len(BINARY_MAGIC))
        start = len(BINARY_MAGIC) + _U32.size
        header: dict[str, Any] = json.loads(data[start : start + size])
        position = start + size

        def take(length: Any) -> bytes:
            nonlocal position
            if not isinstance(length, int) or length < 0 or position + length > len(data):
                raise ValueError("a sketch runs past the end")
            position += length
            return data[position - length : position]

        counts: dict[str, Any] = {}
        for name, entry in header.items():
            if magic == KNOWN_MAGIC and _KNOWN_FIELD in entry:
                counts[name] = entry.pop(_KNOWN_FIELD)
            for field in entry:
                if field == "distribution":
                    entry[field][2] = take(entry[field][2])
                elif field in _SKETCH_FIELDS:
                    entry[field] = take(entry[field])
        for name, (values, points) in counts.items():
            if not isinstance(values, int) or not isinstance(points, int) or values < 0 or points < 0:
                raise ValueError("known quantiles of a negative count")
            at = position
            take(8 * (values + 2 * points))
            if values != len(_FRACTIONS):  # taken at other points: taken again when asked for
                continue
            split = None
            if points:
                cut = at + 8 * values
                split = Split(_doubles_at(data, cut, points), _doubles_at(data, cut + 8 * points, points))
            found = np.frombuffer(data, dtype="<f8", count=values, offset=at)
            known[name] = KnownQuantiles(_FRACTIONS, found, split)
    except (ValueError, TypeError, IndexError, AttributeError, struct.error) as exc:
        raise DigestError(f"stored rollup columns that cannot be read ({exc})") from None
    if position != len(data):
        raise DigestError("stored rollup columns with bytes past their last sketch")
    return header, known


def encode_view(view: DatasetProfileView) -> bytes:
    """The digested columns of a merged view, as a rollup stores them (:func:`pack_columns`, with
    the known quantiles)."""
    columns = view.get_columns().items()
    return pack_columns({name: digest_column(column, raw=True) for name, column in columns if column}, known=True)


def decode_view(data: bytes) -> DatasetProfileView:
    """The view of :func:`encode_view`'s bytes (each sketch checked as a summary's are)."""
    return view_of(unpack_columns(data))


def decode_columns(data: bytes) -> ProfileColumns:
    """:func:`decode_view` as the columns' sketches (``digest.columns_of``): what the timeline
    reads, without building the view. The known quantiles stored with them are handed to
    ``column_stats.sketch_quantiles``: the view reads them instead of sorting each sketch again."""
    columns, known = unpack_known(data)
    found = columns_of(columns)
    for name, quantiles in known.items():
        sketch = found.columns[name].kll
        if sketch is not None and not sketch.is_empty():
            sketch_quantiles.remember(sketch, quantiles)
    return found


@dataclass(frozen=True)
class Rollup:
    """The merged columns of ``members`` (:func:`encode_view`; None for a single member: its own
    summary is the merge)."""

    members: tuple[Member, ...]
    names: tuple[str, ...]
    digest: bytes | None

    @functools.cached_property
    def key(self) -> str:
        """The content key of its members, as :attr:`whylogs_songbird.timeline.Bucket.key` of the bucket."""
        return content_key(m.identity for m in self.members)

    def header(self) -> bytes:
        """What is stored under the rollup's key (its merged columns are stored apart, see
        :meth:`Rollups.write`, so that reading its members and names stays small)."""
        header = {
            "v": _FORMAT,
            "m": self.members,  # each member as [timestamp, identity, upload id, sha256]
            "names": list(self.names),
        }
        return json.dumps(header, separators=(",", ":")).encode()

    def header_after(self, earlier: bytes, before: Rollup) -> bytes:
        """:meth:`header`, made from ``earlier`` (the header of ``before``) when this rollup's members
        are ``before``'s followed by new ones, as a batch appended to a bucket makes it: only the new
        members and the names are encoded (a header names every member of its bucket)."""
        kept = len(before.members)
        cut = earlier.rfind(_MEMBERS_END)  # from the end: past the names, not every member
        if not kept or self.members[:kept] != before.members or cut < 0:
            return self.header()
        new = json.dumps(self.members[kept:], separators=(",", ":")).encode()[1:-1]
        names = json.dumps(list(self.names), separators=(",", ":")).encode()
        return b"".join((earlier[:cut], b"," if new else b"", new, _MEMBERS_END, names, b"}"))

    @classmethod
    def decode(cls, header: bytes, merged: bytes | None = None) -> Rollup | None:
        """The rollup of a stored header and its merged columns (None: the header alone, its
        ``digest`` None); None when it is not one this version reads."""
        try:
            found = json.loads(header)
            if found.get("v") != _FORMAT:
                return None
            members = tuple(Member(int(t), str(i), str(u), str(s)) for t, i, u, s in found["m"])
            names = tuple(str(n) for n in found["names"])
        except (ValueError, TypeError, KeyError, AttributeError):
            return None
        if not members:
            return None
        return cls(members, names, merged or None)


def _names(*columns: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(name for names in columns for name in names))


class _HeaderCache:
    """The rollup headers this process wrote or read last, decoded, by (artefacts, session, key),
    up to :attr:`max_bytes` of headers: a header names every member of its bucket, and decoding it
    again for each batch that lands costs with the bucket's size. An entry is used only when the
    stored header is byte for byte the one it was made of (another host's write is decoded anew).

    A rollup this process merged and wrote also keeps its merged columns (:meth:`merged`, as
    :func:`unpack_columns` reads them from the store, counted in :attr:`max_bytes` too), so the
    next batch of its bucket is merged into them without reading, decoding and checking them
    again: they are the very bytes this process's sketch library serialized."""

    def __init__(self, max_bytes: int = 32 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self._entries: weakref.WeakKeyDictionary[Any, OrderedDict[tuple[str, str], _Kept]] = weakref.WeakKeyDictionary()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, artefacts: Any, session_id: str, key: str, header: bytes) -> Rollup | None:
        entry = self.entry(artefacts, session_id, key)
        return entry[1] if entry is not None and entry[0] == header else None

    def entry(self, artefacts: Any, session_id: str, key: str) -> tuple[bytes, Rollup] | None:
        """The header kept for this key and its rollup, whatever is stored now."""
        kept = self._kept(artefacts, session_id, key)
        return None if kept is None else (kept.header, kept.rollup)

    def merged(self, artefacts: Any, session_id: str, key: str, header: bytes) -> tuple[Rollup, dict[str, Any]] | None:
        """The rollup (its members and names) and the merged columns this process wrote with
        ``header``; None when they are not kept or the stored header is another."""
        kept = self._kept(artefacts, session_id, key)
        if kept is None or kept.columns is None or kept.header != header:
            return None
        return kept.rollup, kept.columns

    def _kept(self, artefacts: Any, session_id: str, key: str) -> _Kept | None:
        with self._lock:
            try:
                entries = self._entries.get(artefacts)
            except TypeError:  # artefacts that cannot be weakly referenced are not cached
                return None
            return entries.get((session_id, key)) if entries is not None else None

    def keep(
        self,
        artefacts: Any,
        session_id: str,
        key: str,
        header: bytes,
        rollup: Rollup,
        columns: dict[str, Any] | None = None,
        columns_size: int = 0,
    ) -> None:
        """Keep ``header`` (and, when given, the merged ``columns`` written with it, of
        ``columns_size`` bytes as stored); a header or columns too big for a quarter of
        :attr:`max_bytes` are not kept (columns too big: the header alone is)."""
        if len(header) > self.max_bytes // 4:
            return
        if columns is None or len(header) + columns_size > self.max_bytes // 4:
            columns, columns_size = None, 0
        size = len(header) + columns_size
        with self._lock:
            try:
                entries = self._entries.setdefault(artefacts, OrderedDict())
            except TypeError:  # artefacts that cannot be weakly referenced are not cached
                return
            old = entries.pop((session_id, key), None)
            self._size += size - (old.size if old is not None else 0)
            entries[(session_id, key)] = _Kept(header, rollup, columns, size)
            while self._size > self.max_bytes and entries:
                _, dropped = entries.popitem(last=False)
                self._size -= dropped.size

    def forget(self, artefacts: Any, session_id: str, key: str) -> None:
        """Forget what is kept for this key (a write of it failed: what is stored is not known)."""
        with self._lock:
            try:
                entries = self._entries.get(artefacts)
            except TypeError:
                return
            old = entries.pop((session_id, key), None) if entries is not None else None
            if old is not None:
                self._size -= old.size


class _Staged(NamedTuple):
    """Writes of one rollup, staged to be committed with others (:meth:`Rollups._commit`), and
    what :class:`_HeaderCache` keeps once they are: (key, header, rollup, columns, columns' size),
    or None to forget ``key``."""

    writes: list[DerivedWrite]
    kept: tuple[str, bytes, Rollup, dict[str, Any] | None, int] | None
    key: str = ""


#: A new batch to merge into its buckets: its member, its summary (a digest) and its digested columns.
_Entry = tuple[Member, bytes, dict[str, Any]]


class _Appended(NamedTuple):
    """A bucket's rollup with new batches appended, and its merged columns as kept (:class:`_HeaderCache`)."""

    rollup: Rollup
    columns: dict[str, Any] | None


class _Kept(NamedTuple):
    """One entry of :class:`_HeaderCache`."""

    header: bytes
    rollup: Rollup
    columns: dict[str, Any] | None
    size: int


_HEADERS = _HeaderCache()


def _decoded_header(artefacts: Any, session_id: str, key: str, header: bytes) -> Rollup | None:
    """:meth:`Rollup.decode` of a stored header (members and names), from :data:`_HEADERS` when it is the one kept."""
    found = _HEADERS.get(artefacts, session_id, key, header)
    if found is None:
        found = Rollup.decode(header)
        if found is not None:
            _HEADERS.keep(artefacts, session_id, key, header, found)
    return found


class Rollups:
    """Rollups stored in ``artefacts``; ``member_digest(session_id, member)`` reads a member's stored
    summary (None when it is gone or replaced)."""

    def __init__(self, artefacts: Artefacts, member_digest: Callable[[str, Member], bytes | None]) -> None:
        self.artefacts = artefacts
        self.member_digest = member_digest

    def read(self, session_id: str, granularity: str, start: int, family: str, *, merged: bool = True) -> Rollup | None:
        """The stored rollup, None when there is none or it is not whole (its merged columns replaced
        by another host's meanwhile). ``merged=False``: its members and names only (``digest`` None)."""
        key = rollup_key(granularity, start, family)
        return self._found(session_id, key, self.artefacts.get_derived(session_id, key), merged=merged)

    def _found(self, session_id: str, key: str, header: bytes | None, *, merged: bool = True) -> Rollup | None:
        """:meth:`read` of the stored ``header`` of ``key``."""
        found = None if header is None else _decoded_header(self.artefacts, session_id, key, header)
        if found is None or not merged or len(found.members) == 1:
            return found
        data = self.artefacts.get_derived(session_id, f"{key}/{found.key}")
        return None if data is None else Rollup(found.members, found.names, data)

    def write(
        self,
        session_id: str,
        granularity: str,
        start: int,
        family: str,
        rollup: Rollup,
        columns: dict[str, Any] | None = None,
    ) -> None:
        """Store ``rollup``: its merged columns under ``<key>/<its members' content key>``, then its
        header, then drop the merged columns of any other members (a header names the columns of
        exactly its members, so hosts writing one bucket at once never mix two merges).
        ``columns``: its merged columns as :func:`pack_stored` gives them, kept in memory for the
        next batch of the bucket (see :class:`_HeaderCache`)."""
        self._commit(session_id, [self._writes(session_id, granularity, start, family, rollup, columns)])

    def _writes(
        self,
        session_id: str,
        granularity: str,
        start: int,
        family: str,
        rollup: Rollup,
        columns: dict[str, Any] | None = None,
    ) -> _Staged:
        """What :meth:`write` writes, to be committed (:meth:`_commit`)."""
        key = rollup_key(granularity, start, family)
        own = f"{key}/{rollup.key}"
        writes: list[DerivedWrite] = []
        if rollup.digest is not None:
            writes.append(("put", own, rollup.digest))
        earlier = _HEADERS.entry(self.artefacts, session_id, key)
        header = rollup.header() if earlier is None else rollup.header_after(*earlier)
        writes.append(("put", key, header))
        writes.append(("drop", f"{key}/", own if rollup.digest is not None else None))
        size = len(rollup.digest) if rollup.digest is not None else 0
        kept = Rollup(rollup.members, rollup.names, None)
        return _Staged(writes, (key, header, kept, columns if size else None, size))

    def _commit(self, session_id: str, staged: Sequence[_Staged]) -> None:
        """Make the staged writes, in order: in one transaction where the artefacts can
        (``write_derived``), else one by one; then keep the headers written (:class:`_HeaderCache`)."""
        many = getattr(self.artefacts, "write_derived", None)
        if many is not None:
            many(session_id, [write for item in staged for write in item.writes])
        else:
            for item in staged:
                for write in item.writes:
                    if write[0] == "put":
                        self.artefacts.put_derived(session_id, write[1], write[2])
                    else:
                        self.artefacts.drop_derived(session_id, write[1], write[2])
        for item in staged:
            if item.kept is None:
                _HEADERS.forget(self.artefacts, session_id, item.key)
            else:
                _HEADERS.keep(self.artefacts, session_id, *item.kept)

    # -- as batches land --

    def add(self, session_id: str, member: Member, segment: str, digest: bytes) -> None:
        """Merge a newly summarised batch (``digest``) into the rollups of its hour and day, for every
        segment and for its own segment."""
        self.add_many(session_id, [(member, segment, digest)])

    def add_many(self, session_id: str, batches: Sequence[tuple[Member, str, bytes]]) -> None:
        """:meth:`add` for several newly summarised batches (member, segment, digest) at once: each
        bucket they touch is read, merged and written once, and ends as those adds one by one would
        leave it (a burst of uploads into one hour costs one merge per bucket, not one per upload)."""
        groups: dict[tuple[str, int, str], dict[str, _Entry]] = {}
        for member, segment, digest in batches:
            families = [ALL_SEGMENTS] + ([family_of(segment)] if segment else [])
            columns = digest_columns(digest)
            for granularity in ROLLED:
                start = bucket_bounds(member.timestamp, granularity)[0]  # type: ignore[arg-type]
                for family in families:
                    # one version per upload: a later PUT of the same slot replaces the earlier one
                    group = groups.setdefault((granularity, start, family), {})
                    group.pop(member.upload_id, None)
                    group[member.upload_id] = (member, digest, columns)
        merges: dict[tuple[str, ...], dict[str, Any]] = {}
        appends: dict[tuple[int, tuple[str, ...]], tuple[Any, tuple[Member, ...], tuple[str, ...], _Appended]] = {}

        checked: set[int] = set()  # the digested columns (by id: ``groups`` holds them) already checked

        def merged(entries: Sequence[_Entry]) -> dict[str, Any]:
            """The digested columns of the merge of new batches, in order: made once for the hour
            and the day they share (from the sketches: building whylogs' views to merge them cost
            most of an upload's ingest). Each batch's sketches are checked by the first merge that
            reads them, not again by the merges of its other families (every segment, its own)."""
            key = tuple(member.identity for member, _, _ in entries)
            if key not in merges:
                profiles = [columns for _, _, columns in entries]
                merges[key] = merge_digested(profiles, raw=True, own=[id(columns) in checked for columns in profiles])
                checked.update(id(columns) for columns in profiles)
            return merges[key]

        def appended(
            found: Rollup | None, columns: dict[str, Any] | None, own: bool, entries: Sequence[_Entry]
        ) -> _Appended:
            """The rollup of ``found`` (None: none yet) with new batches appended (``entries``, in
            order), its merged columns those of ``columns`` (``found``'s; None: none) and the new
            batches', and those columns as :func:`pack_stored` reads them back. Made once for the
            buckets that append the same batches to the same members and the very same kept columns
            (an hour and its day while they hold the same batches: a day of one active hour, or of
            one batch a day, whose kept columns are then one object): the merge, its known quantiles
            and the members' content key are most of a bucket's cost."""
            key = (id(columns), tuple(member.identity for member, _, _ in entries))
            members, names = (found.members, found.names) if found is not None else ((), ())
            done = appends.get(key)
            if done is not None and done[0] is columns and done[1] == members and done[2] == names:
                return done[3]
            new = tuple(member for member, _, _ in entries)
            names_after = _names(names, *(data for _, _, data in entries))
            if columns is None and len(entries) == 1:  # a single batch: its own summary is the merge
                digest, kept = None, None
            else:
                both = (
                    merged(entries)
                    if columns is None
                    else merge_digested([columns, merged(entries)], raw=True, own=(own, True))
                )
                digest, kept = pack_stored(both, known=True)
            made = _Appended(Rollup((*members, *new), names_after, digest), kept)
            appends[key] = (columns, members, names, made)
            return made

        staged: list[_Staged] = []
        # hours first, days last, as one add writes them (a day that shows a batch: its hour does too)
        for (granularity, start, family), group in sorted(groups.items(), key=lambda item: ROLLED.index(item[0][0])):
            self._add_group(session_id, granularity, start, family, list(group.values()), appended, staged)
        self._commit(session_id, staged)  # every bucket's writes in one transaction

    def _add_group(
        self,
        session_id: str,
        granularity: str,
        start: int,
        family: str,
        entries: list[_Entry],
        appended: Callable[[Rollup | None, dict[str, Any] | None, bool, Sequence[_Entry]], _Appended],
        staged: list[_Staged],
    ) -> None:
        """Stage the writes that merge new batches (``entries``) into one bucket's rollup (``appended``
        makes the rollup of batches appended to it, see :meth:`add_many`)."""
        key = rollup_key(granularity, start, family)
        header = self.artefacts.get_derived(session_id, key)
        # the merged columns this process wrote with the stored header, when it is still that one
        mine = None if header is None else _HEADERS.merged(self.artefacts, session_id, key, header)
        found, columns = mine if mine is not None else (self._found(session_id, key, header), None)
        if found is not None:
            known = {m.identity for m in found.members}
            entries = [entry for entry in entries if entry[0].identity not in known]
            if not entries:
                return
        entries.sort(key=lambda entry: entry[0].order)
        new = [member for member, _, _ in entries]
        if found is None:  # the first batches of the bucket (or some not rolled up yet: a view rebuilds it)
            staged.append(self._writes(session_id, granularity, start, family, *appended(None, None, True, entries)))
            return
        replaced = {member.upload_id for member in new}
        others = [m for m in found.members if m.upload_id not in replaced]
        if len(others) == len(found.members) and new[0].order > found.members[-1].order:
            own = columns is not None  # merged and serialized by this process: not read, not checked again
            if columns is None:
                base = found.digest or self.member_digest(session_id, found.members[0])
                if base is None:
                    staged.append(self._dropped(granularity, start, family))
                    return
                columns = unpack_columns(found.digest) if found.digest is not None else digest_columns(base)
            staged.append(self._writes(session_id, granularity, start, family, *appended(found, columns, own, entries)))
            return
        # late within its bucket, or a replaced upload: this bucket is merged again, in order
        members = sorted([*others, *new], key=lambda m: m.order)
        given = {member.identity: data for member, _, data in entries}  # new batches: decoded already
        views = []
        for member in members:
            decoded = given.get(member.identity)
            if decoded is None:
                summary = self.member_digest(session_id, member)
                if summary is None:
                    staged.append(self._dropped(granularity, start, family))
                    return
                decoded = digest_columns(summary)
            views.append(view_of(decoded))
        staged.append(self._writes(session_id, granularity, start, family, self.merge(members, views)))

    @staticmethod
    def _dropped(granularity: str, start: int, family: str) -> _Staged:
        """The rollup dropped, with its merged columns (staged, see :meth:`_commit`)."""
        key = rollup_key(granularity, start, family)
        return _Staged([("drop", key, None)], None, key)

    @staticmethod
    def merge(members: Sequence[Member], views: Sequence[DatasetProfileView]) -> Rollup:
        """The rollup of ``members`` from their views, in that order."""
        merged = merge_views(views)
        names = _names(merged.get_columns())
        return Rollup(tuple(members), names, encode_view(merged) if len(members) > 1 else None)

    # -- at view time --

    def bucket_rollup(
        self,
        session_id: str,
        granularity: str,
        family: str,
        bucket: Bucket,
        members: Sequence[Member],
        load: Callable[[Member], DatasetProfileView],
    ) -> tuple[Rollup, DatasetProfileView | None]:
        """The rollup of an hour or day ``bucket`` (its members given in merge order), and its view when
        it had to be merged from the profiles (``load``), then stored; else the view is None (read
        it with :meth:`view`)."""
        found = self.read(session_id, granularity, bucket.start, family)
        if found is not None and found.key == bucket.key:
            return found, None
        views = [load(m) for m in members]
        rollup = self.merge(members, views)
        self.write(session_id, granularity, bucket.start, family, rollup)
        return rollup, merge_views(views) if len(views) > 1 else views[0]

    def view(self, rollup: Rollup, load: Callable[[Member], DatasetProfileView]) -> DatasetProfileView:
        """The merged view of a rollup (a single member's is its own view)."""
        if rollup.digest is None:
            return load(rollup.members[0])
        return decode_view(rollup.digest)

    def columns(
        self, rollup: Rollup, load: Callable[[Member], DatasetProfileView]
    ) -> DatasetProfileView | ProfileColumns:
        """:meth:`view`, or the merged columns' sketches where the rollup stores them merged (no view is built)."""
        if rollup.digest is None:
            return load(rollup.members[0])
        return decode_columns(rollup.digest)


# -- the ingest worker's hook --------------------------------------------------------------------


def _summary_of(store: Any) -> Callable[[str, Member], bytes | None]:
    def read(session_id: str, member: Member) -> bytes | None:
        data: bytes | None = store.get_summary(member.upload_id, member.sha256)
        return data

    return read


def member_of(upload: Any) -> Member | None:
    """The rollup member of a stored batch upload record (None for a reference or an unstamped batch)."""
    if getattr(upload, "kind", None) != "batch" or upload.dataset_timestamp is None or upload.sha256 is None:
        return None
    return Member(int(upload.dataset_timestamp), f"{upload.id}:{upload.sha256}:{upload.size}", upload.id, upload.sha256)


def summary_changing(store: Any, upload: Any) -> None:
    """What the ingest worker calls just before it stores a profile's summary or marks it invalid:
    the session's version changes first, so a view that reads the new version finds the profile
    either pending (and stores no document) or done. A failure is logged, never fails the ingest."""
    try:
        bump_version(store, upload.session_id)
    except Exception:
        logger.exception("rollups: changing the timeline version of a session failed")


def note_summarised(store: Any, upload: Any, digest: bytes) -> None:
    """What the ingest worker calls once it stored a batch's summary (``digest``): the batch is merged
    into the rollups of its hour and day. A failure is logged, never fails the ingest (a view merges
    what is missing)."""
    note_summarised_many(store, [(upload, digest)])


def note_summarised_many(store: Any, summarised: Sequence[tuple[Any, bytes]]) -> None:
    """:func:`note_summarised` for several uploads whose summaries are stored (upload, digest), each
    bucket merged once (see :meth:`Rollups.add_many`); a failure is logged per session."""
    by_session: dict[str, list[tuple[Member, str, bytes]]] = {}
    for upload, digest in summarised:
        member = member_of(upload)
        if member is not None:
            by_session.setdefault(upload.session_id, []).append((member, segment_label(upload.segment_tags), digest))
    rollups = Rollups(store, _summary_of(store))
    for session_id, batches in by_session.items():
        try:
            rollups.add_many(session_id, batches)
        except Exception:
            logger.exception("rollups: merging %d upload(s) into their buckets failed", len(batches))


def store_rollups(store: Any) -> Rollups:
    """The rollups kept in ``store``'s derived artefacts."""
    return Rollups(store, _summary_of(store))


__all__ = [
    "ALL_SEGMENTS",
    "ROLLUP_PREFIX",
    "VERSION_KEY",
    "Member",
    "Rollup",
    "Rollups",
    "bucket_prefixes",
    "bump_version",
    "family_of",
    "member_of",
    "note_summarised",
    "note_summarised_many",
    "summary_changing",
    "read_version",
    "rollup_key",
    "store_rollups",
]
