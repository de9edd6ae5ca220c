"""Hand-made serialized profiles for the upload checks: well-formed but broken inside, or crafted
to make a naive reader slow. Built from whylogs' own header messages."""

from __future__ import annotations

from whylogs.core.proto import ChunkHeader, ChunkOffsets, DatasetProfileHeader, DatasetSegmentHeader

from whylogs_songbird.server.profile_check import MAGIC, _varint


def varint(value: int) -> bytes:
    """``value`` as a protobuf varint: seven bits a byte, low first, the top bit set on all but the last."""
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _delimited(message) -> bytes:
    data = message.SerializeToString()
    return varint(len(data)) + data


def split(data: bytes) -> tuple[bytes, DatasetProfileHeader, bytes]:
    """(magic + segment header bytes, profile header, body) of a plain serialized profile."""
    pos = len(MAGIC)
    size, pos = _varint(data, pos, len(data))
    pos += size
    prefix = data[:pos]
    size, pos = _varint(data, pos, len(data))
    header = DatasetProfileHeader.FromString(data[pos : pos + size])
    return prefix, header, data[pos + size :]


def assemble(header: DatasetProfileHeader, body: bytes) -> bytes:
    return MAGIC + _delimited(DatasetSegmentHeader(has_segments=False)) + _delimited(header) + body


def corrupt_chunk_messages(data: bytes) -> bytes:
    """``data`` with every chunk message overwritten by 0xFF bytes: the structure (offsets and
    lengths) stays valid, the metrics cannot be parsed."""
    prefix, header, body = split(data)
    out = bytearray(body)
    for entry in header.column_offsets.values():
        for offset in entry.offsets:
            size, pos = _varint(out, offset, len(out))
            chunk = ChunkHeader.FromString(bytes(out[pos : pos + size]))
            start = pos + size
            out[start : start + chunk.length] = b"\xff" * chunk.length
    return prefix + _delimited(header) + bytes(out)


def shared_chunk(data: bytes, columns: int = 10_000) -> bytes:
    """Every one of ``columns`` columns names the first chunk of ``data``."""
    _, header, body = split(data)
    first = min(o for entry in header.column_offsets.values() for o in entry.offsets)
    crafted = DatasetProfileHeader()
    crafted.CopyFrom(header)
    crafted.column_offsets.clear()
    for i in range(columns):
        crafted.column_offsets[f"c{i:05d}"].CopyFrom(ChunkOffsets(offsets=[first]))
    return assemble(crafted, body)


def repeated_chunk(data: bytes, times: int = 500_000) -> bytes:
    """One column naming the first chunk ``times`` times."""
    _, header, body = split(data)
    first = min(o for entry in header.column_offsets.values() for o in entry.offsets)
    crafted = DatasetProfileHeader()
    crafted.CopyFrom(header)
    crafted.column_offsets.clear()
    crafted.column_offsets["c"].CopyFrom(ChunkOffsets(offsets=[first] * times))
    return assemble(crafted, body)


def rewrite_chunks(data: bytes, edit) -> bytes:
    """``data`` with every column's chunk message passed through ``edit(column, message, header)``
    (which changes the ``ChunkMessage`` in place), the body laid out anew with correct offsets."""
    from whylogs.core.proto import ChunkMessage

    _, header, body = split(data)
    out = bytearray()
    rebuilt = DatasetProfileHeader()
    rebuilt.CopyFrom(header)
    rebuilt.column_offsets.clear()
    for column in sorted(header.column_offsets):
        for offset in header.column_offsets[column].offsets:
            size, pos = _varint(body, offset, len(body))
            chunk_header = ChunkHeader.FromString(body[pos : pos + size])
            message = ChunkMessage.FromString(body[pos + size : pos + size + chunk_header.length])
            edit(column, message, rebuilt)
            payload = message.SerializeToString()
            rebuilt.column_offsets[column].offsets.append(len(out))
            out += _delimited(ChunkHeader(type=ChunkHeader.ChunkType.COLUMN, length=len(payload))) + payload
    rebuilt.length = len(out)
    return assemble(rebuilt, bytes(out))


#: The sketch fields of whylogs' metric component messages.
SKETCH_FIELDS = ("kll", "hll", "frequent_items")


def sketch_paths(data: bytes) -> list[tuple[str, str, str]]:
    """(column, metric path, sketch field) of every sketch in a plain serialized profile."""
    from whylogs.core.proto import ChunkMessage

    _, header, body = split(data)
    found = []
    for column in sorted(header.column_offsets):
        for offset in header.column_offsets[column].offsets:
            size, pos = _varint(body, offset, len(body))
            chunk_header = ChunkHeader.FromString(body[pos : pos + size])
            message = ChunkMessage.FromString(body[pos + size : pos + size + chunk_header.length])
            for index, component in message.metric_components.items():
                kind = component.WhichOneof("value")
                if kind in SKETCH_FIELDS:
                    found.append((column, header.indexed_metric_paths[index], kind))
    return sorted(found)


def edit_sketch(data: bytes, column: str, path: str, edit) -> bytes:
    """``data`` with the sketch bytes of ``column``'s metric ``path`` replaced by ``edit(bytes)``."""

    def change(name, message, header):
        if name != column:
            return
        for index, component in message.metric_components.items():
            if header.indexed_metric_paths[index] == path:
                kind = component.WhichOneof("value")
                sketch = getattr(component, kind)
                sketch.sketch = edit(bytes(sketch.sketch))

    return rewrite_chunks(data, change)


def set_bytes(changes: dict[int, int]):
    """An ``edit`` for :func:`edit_sketch` setting the byte at each position to its value."""

    def edit(sketch: bytes) -> bytes:
        out = bytearray(sketch)
        for pos, value in changes.items():
            if pos < len(out):
                out[pos] = value
        return bytes(out)

    return edit


def huge_frequent_items_map(data: bytes, column: str, lg: int = 64) -> bytes:
    """The crafted profile of issue 20: ``column``'s frequent-items sketch declares a map of 2^``lg``
    slots (``lg_max_map_size`` and ``lg_cur_map_size``, bytes 3 and 4, both ``lg``)."""
    return edit_sketch(data, column, "frequent_items/frequent_strings", set_bytes({3: lg, 4: lg}))


def unknown_metric_index(data: bytes) -> bytes:
    """``data`` with one more metric component in each chunk, at an index the header names no path
    for: well-formed (its sketches pass their checks), but whylogs refuses to read it."""
    from whylogs.core.proto import MetricComponentMessage

    def add(name, message, header):
        message.metric_components[99_999].CopyFrom(MetricComponentMessage(n=1))

    return rewrite_chunks(data, add)


def sketch_spans(data: bytes) -> list[tuple[str, str, str, int, int]]:
    """(column, metric path, sketch field, start, end) of every sketch of a plain serialized profile:
    ``data[start:end]`` are the sketch's bytes, so a byte of them can be changed in place (the
    profile's structure stays valid)."""
    from whylogs.core.proto import ChunkMessage

    prefix, header, body = split(data)
    body_start = len(data) - len(body)
    found = []
    for column in sorted(header.column_offsets):
        for offset in header.column_offsets[column].offsets:
            size, pos = _varint(body, offset, len(body))
            chunk_header = ChunkHeader.FromString(body[pos : pos + size])
            start = body_start + pos + size
            end = start + chunk_header.length
            message = ChunkMessage.FromString(data[start:end])
            for index, component in message.metric_components.items():
                kind = component.WhichOneof("value")
                if kind in SKETCH_FIELDS:
                    sketch = bytes(getattr(component, kind).sketch)
                    at = data.find(sketch, start, end)
                    if at < 0 or data.find(sketch, at + 1, end) >= 0:
                        continue  # not found exactly once: left out
                    found.append((column, header.indexed_metric_paths[index], kind, at, at + len(sketch)))
    return sorted(found)
