"""The cheap structural check of an uploaded profile: what a PUT does instead of deserializing.

A serialized whylogs profile (``DatasetProfileView.serialize()``) is::

    b"WHY1" | varint n | DatasetSegmentHeader (n bytes) | varint m | DatasetProfileHeader (m bytes) | body

The profile header maps each column name to offsets (relative to the body) of *chunks*; a chunk
is ``varint k | ChunkHeader (k bytes, type COLUMN, length L) | ChunkMessage (L bytes)``. The body
is ``header.length`` bytes long.

:func:`check_profile` parses the two headers and every chunk header
and refuses what would make deserialization slow or ambiguous: a bad magic or header, more
columns or chunks than the cap, a chunk named twice (by two columns or by one), a chunk that
starts or ends outside the body or overlaps the next one, and bytes after the body (except the
copy of the segment header whylogs' segmented writer leaves there). The time
it takes grows with the number of chunks, which the cap bounds; the bytes are read through
``mmap``, so memory does not grow with the size of the profile.

Then each chunk message is parsed and every sketch in it checked against the bounds of
``sketch_check.py`` (a sketch header the sketch library would trust into a crash or gigabytes of
memory is refused here, naming the column, metric and field), and the memory all sketches would
take once deserialized is bounded by :data:`MAX_SKETCH_MEMORY`.

A whylogs v0 profile (``DatasetProfileMessage``, which whylogs writes for model-performance metrics
and with ``use_v0=True``) has no magic bytes: it is one varint-delimited message. It is taken when
the data is exactly one such message; its column count is bounded and the sketches whylogs' v0
reader deserializes are checked the same way (``ProfileShape.v0``), and its segment is read from
its ``whylogs.tag.`` tags.

Whether the metrics are valid for whylogs is the full check's job, done later by the ingest
worker (``ingest.py``) in the sandbox process (``sandbox.py``).
"""

from __future__ import annotations

import mmap
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from google.protobuf.message import DecodeError
from whylogs.core.proto import ChunkHeader, ChunkMessage, DatasetProfileHeader, DatasetSegmentHeader, SegmentTag
from whylogs.core.proto.v0 import ColumnMessageV0, DatasetProfileMessageV0

from whylogs_songbird.models import MAX_SEGMENT_TAGS, MAX_TAG_KEY_LENGTH, MAX_TAG_VALUE_LENGTH
from whylogs_songbird.server.sketch_check import (
    SketchCheckError,
    check_chunk,
    check_frequent_strings,
    check_hll,
    check_kll_doubles,
    check_kll_floats,
)

MAGIC = b"WHY1"
#: whylogs prefixes the key of each segment tag it writes in a profile's header with this; the log
#: API (and this server) name the tag without it.
TAG_PREFIX = "whylogs.tag."
#: Headers larger than this are refused (a 20,000-column header is about 1 MB).
MAX_HEADER_BYTES = 64 * 1024 * 1024
#: A chunk header is a few bytes; anything longer is not one.
MAX_CHUNK_HEADER_BYTES = 64
#: The sketches of one profile may take at most this much memory once deserialized (whylogs'
#: defaults take about 100 KB per column; the sandbox process has a little more than this).
MAX_SKETCH_MEMORY = 1024 * 1024 * 1024


class ProfileCheckError(ValueError):
    """The bytes are not a well-formed serialized whylogs profile; the message says why."""


@dataclass(frozen=True)
class ProfileShape:
    """What the check learned: columns, chunks and the byte counts of headers and body."""

    columns: int
    chunks: int
    header_bytes: int
    body_bytes: int
    segmented: bool
    #: Bytes of memory the profile's sketches take once deserialized (0 when they were not checked).
    sketch_memory: int = 0
    #: The segment a segmented profile names in its own header (whylogs' segmented writer), as
    #: ``(key, value)`` pairs without whylogs' tag prefix; () when it names none (or several).
    segment_tags: tuple[tuple[str, str], ...] = ()
    #: A whylogs v0 profile (``DatasetProfileMessage``), read through whylogs' v0 reader in the sandbox.
    v0: bool = False


def header_segment_tags(segment_header: DatasetSegmentHeader) -> tuple[tuple[str, str], ...]:
    """The tags of the one segment a segment header describes (whylogs writes one segment per
    file), without whylogs' ``whylogs.tag.`` prefix; () for an unsegmented profile, or a header
    that names no segment or several."""
    if not segment_header.has_segments or len(segment_header.segments) != 1:
        return ()
    named = segment_header.segments[0].tags
    if len(named) > MAX_SEGMENT_TAGS:
        raise ProfileCheckError(f"its header names {len(named)} segment tags, more than the {MAX_SEGMENT_TAGS} allowed")
    tags = []
    for tag in named:
        key = tag.key[len(TAG_PREFIX) :] if tag.key.startswith(TAG_PREFIX) else tag.key
        if len(key) > MAX_TAG_KEY_LENGTH or len(tag.value) > MAX_TAG_VALUE_LENGTH:
            raise ProfileCheckError(
                f"a segment tag in its header is longer than the {MAX_TAG_KEY_LENGTH}-character key or "
                f"{MAX_TAG_VALUE_LENGTH}-character value allowed"
            )
        tags.append((key, tag.value))
    return tuple(tags)


def _varint(data: memoryview | bytes, pos: int, end: int) -> tuple[int, int]:
    """Decode a protobuf varint at ``pos`` (before ``end``); return (value, position after it)."""
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise ProfileCheckError("a length prefix runs past the end of the data")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            raise ProfileCheckError("a length prefix is not a valid varint")


def check_profile_bytes(
    data: bytes | memoryview | mmap.mmap, *, max_columns: int, sketches: bool = True
) -> ProfileShape:
    """Check ``data`` (see the module docstring); raise :class:`ProfileCheckError` if it is refused.
    With ``sketches`` (the default) every chunk message is parsed and its sketches checked
    (``sketch_check.py``)."""
    with memoryview(data) as view:
        return _check(view, max_columns, sketches)


def _check(view: memoryview, max_columns: int, sketches: bool = True) -> ProfileShape:
    total = len(view)
    if total < len(MAGIC) or bytes(view[: len(MAGIC)]) != MAGIC:
        v0 = _v0_message(view)
        if v0 is None:
            raise ProfileCheckError("it does not start with the whylogs magic bytes WHY1")
        return _check_v0(v0, total, max_columns, sketches)
    pos = len(MAGIC)
    size, pos = _varint(view, pos, total)
    if size > MAX_HEADER_BYTES or pos + size > total:
        raise ProfileCheckError("its segment header is longer than the data")
    try:
        segment_header = DatasetSegmentHeader.FromString(view[pos : pos + size].tobytes())
    except DecodeError:
        raise ProfileCheckError("its segment header is not a valid protobuf message") from None
    pos += size
    size, pos = _varint(view, pos, total)
    if size == 0:
        raise ProfileCheckError("it has no dataset profile header")
    if size > MAX_HEADER_BYTES or pos + size > total:
        raise ProfileCheckError("its dataset profile header is longer than the data")
    try:
        header = DatasetProfileHeader.FromString(view[pos : pos + size].tobytes())
    except DecodeError:
        raise ProfileCheckError("its dataset profile header is not a valid protobuf message") from None
    pos += size
    body_start, body_length = pos, int(header.length)
    if body_start + body_length > total:
        raise ProfileCheckError(f"its body is {total - body_start} bytes but the header says {body_length}")
    if body_start + body_length < total and not (
        segment_header.has_segments and _is_segment_trailer(view, body_start + body_length, total)
    ):
        raise ProfileCheckError(f"{total - body_start - body_length} bytes follow the end of the profile")
    columns = len(header.column_offsets)
    if columns > max_columns:
        raise ProfileCheckError(f"it has {columns} columns, more than this server's limit of {max_columns}")
    offsets: list[int] = []
    names: dict[int, str] = {}
    for name, entry in header.column_offsets.items():
        offsets.extend(entry.offsets)
        names.update(dict.fromkeys(entry.offsets, name))
        if len(offsets) > max_columns:
            raise ProfileCheckError(
                f"its columns name more than {max_columns} chunks (the column limit; one chunk per column)"
            )
    unique = sorted(set(offsets))
    if len(unique) != len(offsets):
        raise ProfileCheckError("a chunk is named more than once (by two columns, or twice by one)")
    memory = 0
    for index, offset in enumerate(unique):
        if offset < 0 or offset >= body_length:
            raise ProfileCheckError(f"a chunk offset ({offset}) lies outside the body of {body_length} bytes")
        limit = unique[index + 1] if index + 1 < len(unique) else body_length
        start = body_start + offset
        end = body_start + limit
        header_size, chunk_pos = _varint(view, start, end)
        if header_size > MAX_CHUNK_HEADER_BYTES or chunk_pos + header_size > end:
            raise ProfileCheckError(f"the chunk at offset {offset} has a header that overlaps the next chunk")
        try:
            chunk = ChunkHeader.FromString(view[chunk_pos : chunk_pos + header_size].tobytes())
        except DecodeError:
            raise ProfileCheckError(f"the chunk at offset {offset} has no valid chunk header") from None
        if chunk.type != ChunkHeader.ChunkType.COLUMN:
            raise ProfileCheckError(f"the chunk at offset {offset} is not a column chunk")
        message_start = chunk_pos + header_size
        if message_start + int(chunk.length) > end:
            raise ProfileCheckError(f"the chunk at offset {offset} runs into the next chunk or past the body")
        if sketches:
            memory += _check_sketches(
                names[offset], view[message_start : message_start + int(chunk.length)], header.indexed_metric_paths
            )
            if memory > MAX_SKETCH_MEMORY:
                raise ProfileCheckError(
                    f"its sketches would take more than {MAX_SKETCH_MEMORY // (1024 * 1024)} MB of memory once read"
                )
    return ProfileShape(
        columns=columns,
        chunks=len(unique),
        header_bytes=body_start,
        body_bytes=body_length,
        segmented=bool(segment_header.has_segments),
        sketch_memory=memory,
        segment_tags=header_segment_tags(segment_header),
    )


def _v0_message(view: memoryview) -> DatasetProfileMessageV0 | None:
    """The whylogs v0 ``DatasetProfileMessage`` that ``view`` is (as whylogs writes one: a varint
    length, then exactly that many bytes), or None when it is not framed as one."""
    total = len(view)
    try:
        size, pos = _varint(view, 0, min(total, 10))
    except ProfileCheckError:
        return None
    if size == 0 or pos + size != total:
        return None
    try:
        message = DatasetProfileMessageV0.FromString(view[pos:total].tobytes())
    except DecodeError:
        raise ProfileCheckError(
            "it is framed as a whylogs v0 profile (DatasetProfileMessage) but its message does not parse"
        ) from None
    if not message.HasField("properties") and not message.columns:
        return None
    return message


def _check_v0(message: DatasetProfileMessageV0, total: int, max_columns: int, sketches: bool) -> ProfileShape:
    """The check of a whylogs v0 profile: the column limit, and every sketch whylogs' v0 reader
    deserializes (each column's histogram, HLL and frequent items) against ``sketch_check.py``.
    Its model-performance metrics are never read by the server (nor deserialized in the sandbox)."""
    columns = len(message.columns)
    if columns > max_columns:
        raise ProfileCheckError(f"it has {columns} columns, more than this server's limit of {max_columns}")
    memory = 0
    if sketches:
        for name, column in message.columns.items():
            try:
                memory += _v0_sketches(column)
            except SketchCheckError as exc:
                raise ProfileCheckError(f"column {name[:200]!r} of this v0 profile: {exc}") from None
            if memory > MAX_SKETCH_MEMORY:
                raise ProfileCheckError(
                    f"its sketches would take more than {MAX_SKETCH_MEMORY // (1024 * 1024)} MB of memory once read"
                )
    tags = {key: value for key, value in message.properties.tags.items() if key.startswith(TAG_PREFIX)}
    header = DatasetSegmentHeader(has_segments=bool(tags))
    if tags:
        header.segments.add().tags.extend(SegmentTag(key=key, value=value) for key, value in sorted(tags.items()))
    return ProfileShape(
        columns=columns,
        chunks=0,
        header_bytes=total - message.ByteSize(),
        body_bytes=message.ByteSize(),
        segmented=bool(tags),
        sketch_memory=memory,
        segment_tags=header_segment_tags(header),
        v0=True,
    )


def _v0_sketches(column: ColumnMessageV0) -> int:
    """Check the sketches of one v0 column that whylogs' v0 reader deserializes; their memory."""
    memory = 0
    histogram = column.numbers.histogram
    if histogram:
        try:
            memory += check_kll_floats(histogram)  # whylogs 0.x wrote floats sketches
        except SketchCheckError:
            memory += check_kll_doubles(histogram)  # whylogs 1.x converting to v0 writes doubles
    if column.HasField("cardinality_tracker") and column.cardinality_tracker.sketch:
        memory += check_hll(column.cardinality_tracker.sketch)
    if column.frequent_items.sketch:
        memory += check_frequent_strings(column.frequent_items.sketch)
    return memory


def _check_sketches(column: str, message: memoryview, metric_paths: object) -> int:
    """Parse one column's chunk message and check its sketches; their memory once deserialized."""
    try:
        chunk = ChunkMessage.FromString(message.tobytes())
    except DecodeError:
        raise ProfileCheckError(f"the metrics of column {column[:200]!r} are not a valid chunk message") from None
    try:
        return check_chunk(column, chunk, metric_paths)
    except SketchCheckError as exc:
        raise ProfileCheckError(str(exc)) from None


def _is_segment_trailer(view: memoryview, pos: int, total: int) -> bool:
    """Whether ``view[pos:total]`` is exactly one delimited segment header: whylogs' segmented
    writer leaves a copy of it after the body."""
    try:
        size, start = _varint(view, pos, total)
    except ProfileCheckError:
        return False
    if start + size != total:
        return False
    try:
        trailer = DatasetSegmentHeader.FromString(view[start:total].tobytes())
    except DecodeError:
        return False
    return bool(trailer.has_segments)


def check_profile_file(path: Path, *, max_columns: int, sketches: bool = True) -> ProfileShape:
    """:func:`check_profile_bytes` over a file, read through ``mmap``."""
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        if size == 0:
            raise ProfileCheckError("it is empty")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            try:
                return check_profile_bytes(mapped, max_columns=max_columns, sketches=sketches)
            except ProfileCheckError as exc:
                # raised again once the map is closed: the frames of this traceback hold views of
                # the map, and closing it under them fails (BufferError) instead of refusing the file
                refusal = str(exc)
    raise ProfileCheckError(refusal)


class CheckedProfiles:
    """The sha256 digests (hex) of profile bytes that passed :func:`check_profile_bytes` in this
    process, each with the column cap it passed under (the check is a function of the bytes and
    the cap alone).

    The upload route notes the bytes a PUT checked before storing them; the ingest worker then
    sends a profile whose recorded digest is noted here to its sandbox child as checked, with that
    digest, and the child skips the structural check only when the digest of the very bytes it
    received is that one (``sandbox.py``). Bytes this process did not check (presigned uploads,
    another host's PUTs, profiles stored before a restart) are not noted, so the child checks
    them. At most ``limit`` digests are kept, the least recently noted forgotten first; thread-safe."""

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit
        self._caps: OrderedDict[str, int] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._caps)

    def __repr__(self) -> str:
        return f"CheckedProfiles(limit={self.limit}, noted={len(self)})"

    def note(self, sha256: str, max_columns: int) -> None:
        """Bytes of digest ``sha256`` passed the check with at most ``max_columns`` columns."""
        with self._lock:
            self._caps[sha256] = max_columns
            self._caps.move_to_end(sha256)
            while len(self._caps) > self.limit:
                self._caps.popitem(last=False)

    def vouches(self, sha256: str | None, max_columns: int) -> bool:
        """Whether bytes of digest ``sha256`` passed the check here under a cap no larger than
        ``max_columns`` (so they pass under this one). A note stays (the same bytes may be stored
        again) until newer ones push it out."""
        if sha256 is None:
            return False
        with self._lock:
            cap = self._caps.get(sha256)
        return cap is not None and cap <= max_columns


__all__ = [
    "MAGIC",
    "CheckedProfiles",
    "TAG_PREFIX",
    "ProfileCheckError",
    "ProfileShape",
    "check_profile_bytes",
    "check_profile_file",
    "header_segment_tags",
]
