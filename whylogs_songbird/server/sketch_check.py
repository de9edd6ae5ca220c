"""A pure-Python check of serialized sketches, run before the sketch library ever sees them.

The sketch library (``whylogs_sketching``, a build of Apache DataSketches) trusts the header of a
serialized sketch: a frequent-items sketch that declares a map of 2^64 slots crashes the process
that deserializes it, and one of 2^26 slots takes gigabytes. So every sketch of an uploaded
profile, and every sketch kept in a stored digest, is read here first: its family, serial
version and preamble size must be those the library writes, its sizes (``lg_k``, ``k``, map
sizes, levels) must lie within bounds far above what whylogs writes and far below what would take
absurd memory, and the counts it declares must match its byte length exactly (for frequent items,
each string's length is walked). A sketch that passes still runs only in the sandbox process
(``sandbox.py``) the first time; this check is what lets a page rebuild a digest's sketches in
the server's own process.

:func:`check_sketch` checks one sketch; :func:`check_component` a whylogs metric component
message (only its sketch fields are sketches); :func:`check_chunk` every component of a column
chunk, with messages that name the column, the metric and the bad field.

Layouts (little-endian), as the library writes them:

- frequent items (family 10): ``preamble_longs(1|4) serial_version(1) family lg_max_map
  lg_cur_map flags(bit 0 empty) unused16`` then, when not empty, ``active_items:u32 unused:u32
  total_weight:u64 offset:u64``, ``active_items`` u64 weights and as many ``len:u32 bytes`` strings;
- KLL doubles (family 15): ``preamble_ints serial_version family flags k:u16 m:u8 unused``; empty
  (2 ints, version 1), one item (2 ints, version 2, one double) or full (6 ints, version 1:
  ``n:u64 min_k:u16 num_levels:u8 unused, unused:u32``, ``num_levels`` u32 level offsets, min and
  max doubles, then the retained doubles from the first offset to the capacity ``k`` implies); a
  KLL floats sketch (whylogs v0 profiles) is laid out the same with 4-byte items and 5 preamble ints
  when full (no trailing unused u32);
- HLL (family 7): ``preamble_ints serial_version lg_k lg_arr flags list_count|cur_min mode`` then
  a coupon list (2 ints), a coupon hash set (3 ints, ``count:u32``) or an HLL array (10 ints:
  ``hip:f64 kxq0:f64 kxq1:f64 num_at_cur_min:u32 aux_count:u32``, the registers and, for HLL_4,
  the aux table);
- compact theta (family 3): ``preamble_longs(1..3) serial_version(3) family lg_nom lg_arr flags
  seed_hash:u16``, ``entries:u32 p:f32`` and ``theta:u64`` as the preamble says, then the entries.
"""

from __future__ import annotations

import functools
import struct
from typing import Any

#: Largest frequent-items map (2^18 slots, about 12 MB); whylogs writes at most 2^10 by default.
MAX_FI_LG_MAP = 18
#: Largest KLL ``k`` (the library's own limit); whylogs writes 1024 by default.
MAX_KLL_K = 65_535
#: Most KLL levels (2^60 values at the smallest k); a level count beyond it cannot be real.
MAX_KLL_LEVELS = 60
#: HLL ``lg_k`` range of the library (whylogs writes 12).
MIN_HLL_LG_K, MAX_HLL_LG_K = 4, 21
#: Largest theta hash table (2^26 entries, the library's own limit).
MAX_THETA_LG = 26
#: Bytes of memory one frequent-items map slot takes once deserialized (a string, a weight, a state).
FI_SLOT_BYTES = 48

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

FI_FAMILY, KLL_FAMILY, HLL_FAMILY, THETA_FAMILY = 10, 15, 7, 3


class SketchCheckError(ValueError):
    """A serialized sketch the server refuses to deserialize; the message names the bad field."""


def _need(data: bytes | memoryview, size: int, what: str) -> None:
    if len(data) < size:
        raise SketchCheckError(f"{what} is {len(data)} bytes, shorter than its {size}-byte header")


def _exact(data: bytes | memoryview, size: int, what: str) -> None:
    if len(data) != size:
        raise SketchCheckError(f"{what} is {len(data)} bytes but its header implies {size}")


def _field(value: int, low: int, high: int, what: str, name: str) -> None:
    if not low <= value <= high:
        raise SketchCheckError(f"{what} declares {name} = {value}, outside {low}..{high}")


# -- frequent items ------------------------------------------------------------------------------


def check_frequent_strings(data: bytes | memoryview) -> int:
    """Check a serialized frequent-strings sketch; return the bytes it takes once deserialized."""
    what = "the frequent-items sketch"
    _need(data, 8, what)
    preamble, version, family, lg_max, lg_cur, flags = data[0], data[1], data[2], data[3], data[4], data[5]
    _field(family, FI_FAMILY, FI_FAMILY, what, "family id")
    _field(version, 1, 1, what, "serial version")
    _field(lg_max, 3, MAX_FI_LG_MAP, what, "lg_max_map_size")
    _field(lg_cur, 3, lg_max, what, "lg_cur_map_size")
    memory = FI_SLOT_BYTES << lg_cur
    if flags & 1:
        _field(preamble, 1, 1, what, "preamble longs (empty)")
        _exact(data, 8, what)
        return memory
    _field(preamble, 4, 4, what, "preamble longs")
    _need(data, 32, what)
    (items,) = _U32.unpack_from(data, 8)
    _field(items, 0, (3 << lg_cur) // 4, what, "active items")
    pos = 32 + 8 * items
    end = len(data)
    if pos + 4 * items > end:
        raise SketchCheckError(f"{what} declares {items} active items, more than its {end} bytes hold")
    for _ in range(items):
        if pos + 4 > end:
            raise SketchCheckError(f"{what} ends inside an item's length")
        (size,) = _U32.unpack_from(data, pos)
        pos += 4 + size
        if pos > end:
            raise SketchCheckError(f"{what} has an item of {size} bytes running past its end")
        memory += size
    if pos != end:
        raise SketchCheckError(f"{what} is {end} bytes but its items end at byte {pos}")
    return memory


# -- KLL -----------------------------------------------------------------------------------------


def _kll_level_capacity(k: int, depth: int) -> int:
    """The capacity of a KLL level ``depth`` levels below the top: about k·(2/3)^depth, rounded
    as the library rounds it (halves of at most 30 levels at a time)."""

    def shrink(size: int, steps: int) -> int:
        return (((2 * size) << steps) // 3**steps + 1) >> 1

    if depth <= 30:
        return shrink(k, depth)
    half = depth // 2
    return shrink(shrink(k, half), depth - half)


@functools.lru_cache(maxsize=1024)  # a few (k, m, levels) in practice; every stored sketch is checked
def kll_capacity(k: int, m: int, levels: int) -> int:
    """Items a KLL sketch of ``levels`` levels has room for (where its last level offset ends)."""
    return sum(max(m, _kll_level_capacity(k, levels - height - 1)) for height in range(levels))


def check_kll_doubles(data: bytes | memoryview) -> int:
    """Check a serialized KLL doubles sketch; return the bytes it takes once deserialized."""
    return _check_kll(data, 8, "the KLL sketch")


def check_kll_floats(data: bytes | memoryview) -> int:
    """Check a serialized KLL floats sketch (whylogs v0 profiles); return the bytes it takes once
    deserialized. Its layout is the doubles sketch's with 4-byte items and a preamble of 5 ints."""
    return _check_kll(data, 4, "the KLL floats sketch")


def _check_kll(data: bytes | memoryview, item: int, what: str) -> int:
    _need(data, 8, what)
    preamble, version, family, flags = data[0], data[1], data[2], data[3]
    (k,) = _U16.unpack_from(data, 4)
    m = data[6]
    _field(family, KLL_FAMILY, KLL_FAMILY, what, "family id")
    _field(m, 8, 8, what, "m")
    _field(k, m, MAX_KLL_K, what, "k")
    if flags & ~0b111:
        raise SketchCheckError(f"{what} declares unknown flags {flags:#x}")
    if flags & 1:  # empty
        _field(preamble, 2, 2, what, "preamble ints (empty)")
        _field(version, 1, 1, what, "serial version (empty)")
        _exact(data, 8, what)
        return 3 * item * k
    if flags & 4:  # one item
        _field(preamble, 2, 2, what, "preamble ints (one item)")
        _field(version, 2, 2, what, "serial version (one item)")
        _exact(data, 8 + item, what)
        return 3 * item * k
    # the library writes a full doubles sketch with 6 preamble ints, a floats sketch with 5
    ints = 6 if item == 8 else 5
    _field(preamble, ints, ints, what, "preamble ints")
    _field(version, 1, 1, what, "serial version")
    _need(data, 4 * ints, what)
    (min_k,) = _U16.unpack_from(data, 16)
    levels = data[18]
    (n,) = _U64.unpack_from(data, 8)
    _field(min_k, m, k, what, "min_k")
    _field(levels, 1, MAX_KLL_LEVELS, what, "num_levels")
    _need(data, 4 * ints + 4 * levels, what)
    offsets = [_U32.unpack_from(data, 4 * ints + 4 * i)[0] for i in range(levels)]
    capacity = kll_capacity(k, m, levels)
    offsets.append(capacity)
    for low, high in zip(offsets, offsets[1:]):
        if low > high:
            raise SketchCheckError(f"{what} has level offsets out of order ({low} > {high}; capacity {capacity})")
    retained = capacity - offsets[0]
    _exact(data, 4 * ints + 4 * levels + 2 * item + item * retained, what)
    weight = sum((high - low) << height for height, (low, high) in enumerate(zip(offsets, offsets[1:])))
    if n != weight or n < 2:
        raise SketchCheckError(f"{what} declares n = {n}, but its levels hold a weight of {weight}")
    return item * capacity + 4 * levels + 64


# -- HLL -----------------------------------------------------------------------------------------

_HLL_LIST, _HLL_SET, _HLL_ARRAY = 0, 1, 2
#: Highest ``cur_min`` of an HLL_4 sketch: its registers (cur_min + a 4-bit offset) stay below 64.
MAX_HLL_CUR_MIN = 48
#: Number of 4-bit registers holding 15 (the aux-table token) in each byte.
_AUX_TOKENS = bytes(((b >> 4) == 15) + ((b & 15) == 15) for b in range(256))


def _check_hll4_aux(registers: bytes, aux: bytes, aux_count: int, lg_k: int, what: str) -> None:
    """An HLL_4 register holding 15 means "see the aux table": the table must hold exactly one
    entry (``value << 26 | slot``) for each such register, and no other (a missing one crashes
    the library when it reads the sketch)."""
    marked = registers.translate(_AUX_TOKENS)  # per byte: how many of its two registers hold 15
    tokens = marked.count(1) + 2 * marked.count(2)
    if tokens != aux_count:
        raise SketchCheckError(f"{what} has {tokens} registers in its aux table but declares {aux_count} aux entries")
    seen = set()
    for (entry,) in _U32.iter_unpack(aux):
        if entry == 0:
            continue
        slot, value = entry & ((1 << 26) - 1), entry >> 26
        if slot >= 1 << lg_k or slot in seen or not 15 <= value <= 63:
            raise SketchCheckError(f"{what} has an aux entry (slot {slot}, value {value}) that no register names")
        register = registers[slot >> 1]
        if (register >> 4 if slot & 1 else register & 15) != 15:
            raise SketchCheckError(f"{what} has an aux entry for slot {slot}, whose register is not in the aux table")
        seen.add(slot)
    if len(seen) != aux_count:
        raise SketchCheckError(f"{what} declares {aux_count} aux entries but holds {len(seen)}")


def _hll_registers(lg_k: int, target: int) -> int:
    """Bytes of the register array of an HLL_4, HLL_6 or HLL_8 sketch."""
    if target == 0:
        return 1 << (lg_k - 1)
    if target == 1:
        return ((1 << lg_k) * 3 >> 2) + 1
    return 1 << lg_k


def check_hll(data: bytes | memoryview) -> int:
    """Check a serialized HLL sketch (compact or updatable); return the bytes it takes once deserialized."""
    what = "the HLL sketch"
    _need(data, 8, what)
    preamble, version, family, lg_k, lg_arr, flags, mode = data[0], data[1], data[2], data[3], data[4], data[5], data[7]
    _field(family, HLL_FAMILY, HLL_FAMILY, what, "family id")
    _field(version, 1, 1, what, "serial version")
    _field(lg_k, MIN_HLL_LG_K, MAX_HLL_LG_K, what, "lg_k")
    if flags & 1:
        raise SketchCheckError(f"{what} is big-endian, which this server does not read")
    current, target = mode & 3, (mode >> 2) & 3
    _field(current, 0, 2, what, "mode")
    _field(target, 0, 2, what, "target HLL type")
    if mode & ~0b1111:
        raise SketchCheckError(f"{what} declares an unknown mode byte {mode:#x}")
    compact, empty = bool(flags & 8), bool(flags & 4)
    registers = _hll_registers(lg_k, target)
    if current == _HLL_ARRAY:
        _field(preamble, 10, 10, what, "preamble ints")
        _need(data, 40, what)
        _field(data[6], 0, 63, what, "cur_min")
        (aux_count,) = _U32.unpack_from(data, 36)
        _field(data[6], 0, MAX_HLL_CUR_MIN, what, "cur_min")
        if target != 0:
            _exact(data, 40 + registers, what)
            if target == 2 and max(data[40:], default=0) > 63:
                raise SketchCheckError(f"{what} has a register above 63")
            return registers + 64
        _field(lg_arr, 0, lg_k, what, "lg_aux_arr")
        _field(aux_count, 0, 1 << lg_k, what, "aux count")
        if compact:
            aux_slots = aux_count
        elif lg_arr:
            aux_slots = 1 << lg_arr
        else:  # an updatable sketch without aux entries writes an empty table of the default size
            aux_slots = max(0, len(data) - 40 - registers) // 4
            if aux_slots & (aux_slots - 1) or not 4 <= aux_slots <= 1 << lg_k:
                raise SketchCheckError(f"{what} has an aux table of {aux_slots} entries, not a power of two")
        if aux_count > aux_slots:
            raise SketchCheckError(f"{what} declares {aux_count} aux entries in a table of {aux_slots}")
        _exact(data, 40 + registers + 4 * aux_slots, what)
        _check_hll4_aux(bytes(data[40 : 40 + registers]), bytes(data[40 + registers :]), aux_count, lg_k, what)
        return registers + 4 * (1 << lg_arr) + 64
    _field(lg_arr, 2, lg_k, what, "lg_arr")
    if current == _HLL_LIST:
        _field(preamble, 2, 2, what, "preamble ints (list)")
        count, header = data[6], 8
    else:
        _field(preamble, 3, 3, what, "preamble ints (set)")
        _need(data, 12, what)
        (count,) = _U32.unpack_from(data, 8)
        header = 12
    _field(count, 0, 1 << lg_arr, what, "coupon count")
    if empty and count:
        raise SketchCheckError(f"{what} is flagged empty but declares {count} coupons")
    if current == _HLL_SET and count > 3 * (1 << lg_arr) // 4:
        raise SketchCheckError(f"{what} declares {count} coupons, more than its hash set of 2^{lg_arr} holds")
    slots = count if compact else 1 << lg_arr
    _exact(data, header + 4 * slots, what)
    coupons = [entry for (entry,) in _U32.iter_unpack(bytes(data[header:]))]
    present = [c for c in coupons if c]
    if len(present) != count or len(set(present)) != count:
        raise SketchCheckError(f"{what} declares {count} coupons but holds {len(set(present))} distinct ones")
    return 4 * (1 << lg_arr) + registers + 64


# -- theta ---------------------------------------------------------------------------------------


def check_compact_theta(data: bytes | memoryview) -> int:
    """Check a serialized compact theta sketch; return the bytes it takes once deserialized."""
    what = "the theta sketch"
    _need(data, 8, what)
    preamble, version, family, flags = data[0], data[1], data[2], data[5]
    _field(family, THETA_FAMILY, THETA_FAMILY, what, "family id")
    _field(version, 3, 3, what, "serial version")
    _field(preamble, 1, 3, what, "preamble longs")
    if flags & 1:
        raise SketchCheckError(f"{what} is big-endian, which this server does not read")
    if not flags & 8:
        raise SketchCheckError(f"{what} is not compact")
    empty = bool(flags & 4)
    if preamble == 1:
        entries = 0 if empty else 1
    else:
        _need(data, 8 * preamble, what)
        (entries,) = _U32.unpack_from(data, 8)
        _field(entries, 0, 1 << MAX_THETA_LG, what, "retained entries")
    _exact(data, 8 * preamble + 8 * entries, what)
    return 8 * entries + 64


# -- whylogs messages ----------------------------------------------------------------------------

#: The sketch fields of whylogs' MetricComponentMessage and their checks.
SKETCH_CHECKS = {
    "kll": check_kll_doubles,
    "hll": check_hll,
    "frequent_items": check_frequent_strings,
}


def check_sketch(kind: str, data: bytes | memoryview) -> int:
    """Check sketch bytes of ``kind`` (``kll``, ``hll``, ``frequent_items`` or ``theta``); return
    the bytes the sketch takes once deserialized; raise :class:`SketchCheckError`."""
    if kind == "theta":
        return check_compact_theta(data)
    return SKETCH_CHECKS[kind](data)


def check_component(message: Any) -> int:
    """Check the sketch a whylogs ``MetricComponentMessage`` holds, if any; return its memory."""
    kind = message.WhichOneof("value")
    check = SKETCH_CHECKS.get(kind or "")
    if check is None:
        return 0
    return check(getattr(message, kind).sketch)


def check_chunk(column: str, chunk: Any, metric_paths: Any) -> int:
    """Check every sketch of one column chunk (a ``ChunkMessage``); return their memory.

    ``metric_paths`` maps a component index to its path (the profile header's
    ``indexed_metric_paths``), so errors name the metric."""
    memory = 0
    for index, component in chunk.metric_components.items():
        try:
            memory += check_component(component)
        except SketchCheckError as exc:
            path = metric_paths.get(index, f"#{index}")
            raise SketchCheckError(f"column {column[:200]!r}, metric {path[:200]!r}: {exc}") from None
    return memory


__all__ = [
    "MAX_FI_LG_MAP",
    "MAX_HLL_LG_K",
    "MAX_KLL_K",
    "SketchCheckError",
    "check_chunk",
    "check_component",
    "check_compact_theta",
    "check_frequent_strings",
    "check_hll",
    "check_kll_doubles",
    "check_kll_floats",
    "check_sketch",
    "kll_capacity",
]
