"""The sketch check (whylogs_songbird/server/sketch_check.py) byte by byte, on hand-built sketches.

test_sketch_check.py runs the check over real sketches of every size; here each header field of
each family is set to the edges of its range (the last value taken, the first refused), each
length to the exact one and one byte more or less, with the message and the memory each sketch
is said to take written out by hand from the layouts in the module's docstring. A few small
sketches straight from the sketch library pin down that what it writes still passes.
"""

from __future__ import annotations

import struct
from types import SimpleNamespace

import pytest
import whylogs_sketching as ds

from whylogs_songbird.server import sketch_check
from whylogs_songbird.server.sketch_check import (
    SketchCheckError,
    check_chunk,
    check_compact_theta,
    check_component,
    check_frequent_strings,
    check_hll,
    check_kll_doubles,
    check_sketch,
    kll_capacity,
)

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/sketch_check.py")


def refused(check, data: bytes, message: str) -> None:
    with pytest.raises(SketchCheckError) as caught:
        check(data)
    assert str(caught.value) == message


def test_the_limits():
    assert (sketch_check.MAX_FI_LG_MAP, sketch_check.MAX_KLL_K, sketch_check.MAX_KLL_LEVELS) == (18, 65_535, 60)
    assert (sketch_check.MIN_HLL_LG_K, sketch_check.MAX_HLL_LG_K, sketch_check.MAX_THETA_LG) == (4, 21, 26)
    assert (sketch_check.FI_SLOT_BYTES, sketch_check.MAX_HLL_CUR_MIN) == (48, 48)


# -- frequent items ------------------------------------------------------------------------------

FI = "the frequent-items sketch"


def fi(
    *,
    preamble: int = 4,
    version: int = 1,
    family: int = 10,
    lg_max: int = 3,
    lg_cur: int = 3,
    flags: int = 0,
    items: int | None = None,
    strings: tuple[bytes, ...] = (),
    tail: bytes = b"",
) -> bytes:
    head = bytes([preamble, version, family, lg_max, lg_cur, flags, 0, 0])
    if flags & 1:
        return head + tail
    count = len(strings) if items is None else items
    body = struct.pack("<IIQQ", count, 0, count, 0) + b"\x01\x00\x00\x00\x00\x00\x00\x00" * len(strings)
    body += b"".join(struct.pack("<I", len(s)) + s for s in strings)
    return head + body + tail


def test_frequent_items_that_pass_and_their_memory():
    assert check_frequent_strings(fi(preamble=1, flags=1)) == 48 << 3
    assert check_frequent_strings(fi(preamble=1, flags=1, lg_max=18, lg_cur=18)) == 48 << 18
    assert check_frequent_strings(fi(strings=(b"abc", b""))) == (48 << 3) + 3
    assert check_frequent_strings(fi(lg_max=4, lg_cur=4, strings=(b"x",) * 12)) == (48 << 4) + 12  # 12 = 3/4 of 16
    assert check_frequent_strings(fi(strings=(b"x",) * 6)) == (48 << 3) + 6  # 6 = 3/4 of 8, rounded down
    assert check_frequent_strings(fi(items=0)) == 48 << 3
    assert check_frequent_strings(memoryview(fi(strings=(b"ab",)))) == (48 << 3) + 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (fi(preamble=1, flags=1)[:7], f"{FI} is 7 bytes, shorter than its 8-byte header"),
        (fi(family=9), f"{FI} declares family id = 9, outside 10..10"),
        (fi(family=11), f"{FI} declares family id = 11, outside 10..10"),
        (fi(version=0), f"{FI} declares serial version = 0, outside 1..1"),
        (fi(version=2), f"{FI} declares serial version = 2, outside 1..1"),
        (fi(lg_max=2, lg_cur=2), f"{FI} declares lg_max_map_size = 2, outside 3..18"),
        (fi(lg_max=19, lg_cur=3), f"{FI} declares lg_max_map_size = 19, outside 3..18"),
        (fi(lg_max=5, lg_cur=2), f"{FI} declares lg_cur_map_size = 2, outside 3..5"),
        (fi(lg_max=5, lg_cur=6), f"{FI} declares lg_cur_map_size = 6, outside 3..5"),
        (fi(preamble=4, flags=1), f"{FI} declares preamble longs (empty) = 4, outside 1..1"),
        (fi(preamble=1, flags=1, tail=b"\x00"), f"{FI} is 9 bytes but its header implies 8"),
        (fi(preamble=1, strings=(b"a",)), f"{FI} declares preamble longs = 1, outside 4..4"),
        (fi(preamble=5, strings=(b"a",)), f"{FI} declares preamble longs = 5, outside 4..4"),
        (fi(items=0)[:31], f"{FI} is 31 bytes, shorter than its 32-byte header"),
        (fi(strings=(b"x",) * 7), f"{FI} declares active items = 7, outside 0..6"),
        (fi(items=2), f"{FI} declares 2 active items, more than its 32 bytes hold"),
        (fi(items=1, tail=b"\x00" * 11), f"{FI} declares 1 active items, more than its 43 bytes hold"),
        (
            fi(items=2, tail=b"\x00" * 16 + struct.pack("<I", 2) + b"ab" + b"\x00" * 3),
            f"{FI} ends inside an item's length",
        ),
        (
            fi(items=1, tail=b"\x00" * 8 + struct.pack("<I", 3) + b"ab"),
            f"{FI} has an item of 3 bytes running past its end",
        ),
        (fi(strings=(b"ab",), tail=b"\x00"), f"{FI} is 47 bytes but its items end at byte 46"),
    ],
)
def test_frequent_items_refused(data, message):
    refused(check_frequent_strings, data, message)


def test_frequent_items_exactly_filling_their_bytes_pass():
    # one item whose length field ends exactly at the end: 32 + 8 + 4 = 44 bytes, an empty string
    assert check_frequent_strings(fi(items=1, tail=b"\x00" * 8 + struct.pack("<I", 0))) == 48 << 3
    assert check_frequent_strings(fi(items=1, tail=b"\x00" * 8 + struct.pack("<I", 2) + b"ab")) == (48 << 3) + 2


# -- KLL -----------------------------------------------------------------------------------------

KLL = "the KLL sketch"


def kll_head(*, preamble: int, version: int, flags: int, k: int = 8, m: int = 8, family: int = 15) -> bytes:
    return bytes([preamble, version, family, flags]) + struct.pack("<H", k) + bytes([m, 0])


def kll_full(
    *,
    k: int = 8,
    m: int = 8,
    offsets: tuple[int, ...] = (5,),
    n: int | None = None,
    min_k: int | None = None,
    levels: int | None = None,
    retained: int | None = None,
    preamble: int = 6,
    version: int = 1,
    flags: int = 0,
    extra: bytes = b"",
) -> bytes:
    levels = len(offsets) if levels is None else levels
    capacity = kll_capacity(k, m, len(offsets))
    bounds = [*offsets, capacity]
    weight = sum((high - low) << h for h, (low, high) in enumerate(zip(bounds, bounds[1:])))
    n = weight if n is None else n
    retained = capacity - offsets[0] if retained is None else retained
    head = kll_head(preamble=preamble, version=version, flags=flags, k=k, m=m)
    body = struct.pack("<QHBBI", n, k if min_k is None else min_k, levels, 0, 0)
    body += b"".join(struct.pack("<I", o) for o in offsets)
    return head + body + b"\x00" * 16 + b"\x00" * (8 * retained) + extra


@pytest.mark.parametrize(
    ("k", "m", "levels", "capacity"),
    [
        (8, 8, 1, 8),
        (200, 8, 1, 200),
        (200, 8, 2, 200 + 133),  # 200 * 2/3 = 133.3
        (200, 8, 3, 200 + 133 + 89),  # 200 * 4/9 = 88.9
        (20, 8, 4, 20 + 13 + 9 + 8),  # 20 * 8/27 = 5.9: at least m
        (1024, 8, 5, 1024 + 683 + 455 + 303 + 202),
    ],
)
def test_kll_capacity(k, m, levels, capacity):
    assert kll_capacity(k, m, levels) == capacity


def test_kll_level_capacities():
    # about k * (2/3)^depth, rounded half up; past 30 levels in two halves, as the library does
    assert sketch_check._kll_level_capacity(65_535, 15) == 150
    assert sketch_check._kll_level_capacity(65_535, 30) == 0  # 65535 * (2/3)^30 = 0.035
    assert sketch_check._kll_level_capacity(3**31, 31) == 2**31  # exact in one step and in two halves
    assert sketch_check._kll_level_capacity(3**32, 32) == 2**32
    assert sketch_check._kll_level_capacity(3**33, 33) == 2**33  # in halves of 16 and 17 steps
    assert sketch_check._kll_level_capacity(100, 0) == 100
    assert sketch_check._kll_level_capacity(100, 1) == 67  # 66.7, rounded half up
    assert sketch_check._kll_level_capacity(7, 1) == 5  # 4.67
    assert sketch_check._kll_level_capacity(3, 1) == 2


def test_kll_sketches_that_pass_and_their_memory():
    assert check_kll_doubles(kll_head(preamble=2, version=1, flags=1)) == 24 * 8
    assert check_kll_doubles(kll_head(preamble=2, version=1, flags=1, k=65_535)) == 24 * 65_535
    assert check_kll_doubles(kll_head(preamble=2, version=2, flags=4) + b"\x00" * 8) == 24 * 8
    assert check_kll_doubles(kll_head(preamble=2, version=2, flags=6, k=200) + b"\x00" * 8) == 24 * 200
    assert check_kll_doubles(kll_full()) == 8 * 8 + 4 * 1 + 64  # 3 of 8 retained on one level
    assert check_kll_doubles(kll_full(offsets=(6,))) == 8 * 8 + 4 + 64  # n = 2: the fewest a full sketch holds
    assert check_kll_doubles(kll_full(offsets=(6,), flags=2)) == 8 * 8 + 4 + 64  # level-zero-sorted flag
    two = kll_full(offsets=(6, 10))  # capacity 8 + 8; 4 at level 0 (weight 4), 6 at level 1 (weight 12)
    assert check_kll_doubles(two) == 8 * 16 + 4 * 2 + 64
    assert check_kll_doubles(kll_full(k=200, offsets=(190,), min_k=8)) == 8 * 200 + 4 + 64
    assert check_kll_doubles(kll_full(offsets=(0, 7, 8, 16))) == 8 * 32 + 16 + 64  # full levels, empty ones


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (kll_head(preamble=2, version=1, flags=1)[:7], f"{KLL} is 7 bytes, shorter than its 8-byte header"),
        (kll_head(preamble=2, version=1, flags=1, family=14), f"{KLL} declares family id = 14, outside 15..15"),
        (kll_head(preamble=2, version=1, flags=1, family=16), f"{KLL} declares family id = 16, outside 15..15"),
        (kll_head(preamble=2, version=1, flags=1, m=7, k=8), f"{KLL} declares m = 7, outside 8..8"),
        (kll_head(preamble=2, version=1, flags=1, m=9, k=9), f"{KLL} declares m = 9, outside 8..8"),
        (kll_head(preamble=2, version=1, flags=1, k=7), f"{KLL} declares k = 7, outside 8..65535"),
        (kll_head(preamble=2, version=1, flags=8), f"{KLL} declares unknown flags 0x8"),
        (kll_head(preamble=2, version=1, flags=0x81), f"{KLL} declares unknown flags 0x81"),
        (kll_head(preamble=3, version=1, flags=1), f"{KLL} declares preamble ints (empty) = 3, outside 2..2"),
        (kll_head(preamble=2, version=2, flags=1), f"{KLL} declares serial version (empty) = 2, outside 1..1"),
        (kll_head(preamble=2, version=1, flags=1) + b"\x00", f"{KLL} is 9 bytes but its header implies 8"),
        (
            kll_head(preamble=1, version=2, flags=4) + b"\x00" * 8,
            f"{KLL} declares preamble ints (one item) = 1, outside 2..2",
        ),
        (
            kll_head(preamble=2, version=1, flags=4) + b"\x00" * 8,
            f"{KLL} declares serial version (one item) = 1, outside 2..2",
        ),
        (kll_head(preamble=2, version=2, flags=4) + b"\x00" * 7, f"{KLL} is 15 bytes but its header implies 16"),
        (kll_head(preamble=2, version=2, flags=4) + b"\x00" * 9, f"{KLL} is 17 bytes but its header implies 16"),
        (kll_full(preamble=5), f"{KLL} declares preamble ints = 5, outside 6..6"),
        (kll_full(version=2), f"{KLL} declares serial version = 2, outside 1..1"),
        (kll_full()[:23], f"{KLL} is 23 bytes, shorter than its 24-byte header"),
        (kll_full(min_k=7), f"{KLL} declares min_k = 7, outside 8..8"),
        (kll_full(k=200, offsets=(190,), min_k=201), f"{KLL} declares min_k = 201, outside 8..200"),
        (kll_full(levels=0), f"{KLL} declares num_levels = 0, outside 1..60"),
        (kll_full(levels=61), f"{KLL} declares num_levels = 61, outside 1..60"),
        (kll_full(levels=2)[:31], f"{KLL} is 31 bytes, shorter than its 32-byte header"),
        (kll_full(offsets=(9,), retained=0, n=0), f"{KLL} has level offsets out of order (9 > 8; capacity 8)"),
        (kll_full(offsets=(10, 6), retained=0), f"{KLL} has level offsets out of order (10 > 6; capacity 16)"),
        (kll_full(extra=b"\x00"), f"{KLL} is 69 bytes but its header implies 68"),
        (kll_full(retained=2), f"{KLL} is 60 bytes but its header implies 68"),
        (kll_full(n=4), f"{KLL} declares n = 4, but its levels hold a weight of 3"),
        (kll_full(n=2), f"{KLL} declares n = 2, but its levels hold a weight of 3"),
        (kll_full(offsets=(7,)), f"{KLL} declares n = 1, but its levels hold a weight of 1"),
        (kll_full(offsets=(8,), retained=0), f"{KLL} declares n = 0, but its levels hold a weight of 0"),
    ],
)
def test_kll_sketches_refused(data, message):
    refused(check_kll_doubles, data, message)


def test_a_kll_sketch_of_the_largest_k_and_most_levels_passes():
    data = kll_full(k=65_535, offsets=(65_533,))
    assert check_kll_doubles(data) == 8 * 65_535 + 4 + 64
    deep = kll_full(offsets=tuple([kll_capacity(8, 8, 60) - 2] * 60))  # two items of weight 2^59
    assert check_kll_doubles(deep) == 8 * kll_capacity(8, 8, 60) + 4 * 60 + 64


def test_kll_sketches_from_the_library_pass():
    empty = ds.kll_doubles_sketch(8)
    assert check_kll_doubles(empty.serialize()) == 24 * 8
    one = ds.kll_doubles_sketch(200)
    one.update(1.5)
    assert check_kll_doubles(one.serialize()) == 24 * 200
    full = ds.kll_doubles_sketch(8)
    for i in range(100):
        full.update(float(i))
    check_kll_doubles(full.serialize())


# -- HLL -----------------------------------------------------------------------------------------

HLL = "the HLL sketch"
LIST, SET, ARRAY = 0, 1, 2


def hll(
    *,
    current: int = LIST,
    target: int = 0,
    lg_k: int = 4,
    lg_arr: int = 2,
    preamble: int | None = None,
    version: int = 1,
    family: int = 7,
    flags: int = 8,
    byte6: int = 0,
    mode: int | None = None,
    coupons: tuple[int, ...] = (),
    slots: int | None = None,
    count: int | None = None,
    tail: bytes = b"",
) -> bytes:
    """A coupon list or set (``current`` LIST or SET); ``flags`` 8 is compact."""
    mode = current | target << 2 if mode is None else mode
    if preamble is None:
        preamble = 2 if current == LIST else 3
    listed = len(coupons) if count is None else count
    head = bytes([preamble, version, family, lg_k, lg_arr, flags, listed if current == LIST else byte6, mode])
    if current != LIST:
        head += struct.pack("<I", listed)
    slots = (len(coupons) if flags & 8 else 1 << lg_arr) if slots is None else slots
    entries = list(coupons) + [0] * (slots - len(coupons))
    return head + b"".join(struct.pack("<I", c) for c in entries) + tail


def hll_array(
    *,
    target: int,
    lg_k: int = 4,
    registers: bytes | None = None,
    aux: tuple[int, ...] = (),
    aux_count: int | None = None,
    lg_arr: int = 0,
    flags: int = 8,
    cur_min: int = 0,
    preamble: int = 10,
    tail: bytes = b"",
) -> bytes:
    sizes = {0: 1 << (lg_k - 1), 1: ((1 << lg_k) * 3 >> 2) + 1, 2: 1 << lg_k}
    registers = bytes(sizes[target]) if registers is None else registers
    count = len([a for a in aux if a]) if aux_count is None else aux_count
    head = bytes([preamble, 1, 7, lg_k, lg_arr, flags, cur_min, ARRAY | target << 2])
    head += b"\x00" * 24 + struct.pack("<II", 0, count)
    return head + registers + b"".join(struct.pack("<I", a) for a in aux) + tail


def test_coupon_lists_and_sets_that_pass_and_their_memory():
    # memory: the hash table of 2^lg_arr coupons, the registers of the target type, 64
    assert check_hll(hll(coupons=(5, 9))) == 4 * 4 + 8 + 64
    assert check_hll(hll(coupons=(5, 9), flags=0)) == 4 * 4 + 8 + 64  # updatable: every slot written
    assert check_hll(hll(coupons=(), flags=8 | 4)) == 4 * 4 + 8 + 64  # empty
    assert check_hll(hll(coupons=(1, 2, 3, 4))) == 4 * 4 + 8 + 64  # a full list
    assert check_hll(hll(coupons=(5,), target=1)) == 4 * 4 + 13 + 64
    assert check_hll(hll(coupons=(5,), target=2)) == 4 * 4 + 16 + 64
    assert check_hll(hll(current=SET, lg_arr=3, coupons=(1, 2, 3, 4, 5, 6), flags=0)) == 4 * 8 + 8 + 64  # 3/4
    assert check_hll(hll(lg_k=21, lg_arr=21, coupons=(7,))) == 4 * (1 << 21) + (1 << 20) + 64
    assert check_hll(memoryview(hll(coupons=(5,)))) == 4 * 4 + 8 + 64


def test_hll_arrays_that_pass_and_their_memory():
    assert check_hll(hll_array(target=2)) == 16 + 64
    assert check_hll(hll_array(target=2, registers=bytes([63] * 16))) == 16 + 64
    assert check_hll(hll_array(target=1)) == 13 + 64
    assert check_hll(hll_array(target=1, cur_min=48)) == 13 + 64
    assert check_hll(hll_array(target=0)) == 8 + 4 * 1 + 64  # no aux table: lg_arr 0
    registers = bytes([0x0F, 0xF0, 0, 0, 0, 0, 0, 0])  # slot 0 (low nibble) and slot 3 (high nibble) hold 15
    aux = ((20 << 26) | 0, (15 << 26) | 3)
    assert check_hll(hll_array(target=0, registers=registers, aux=aux)) == 8 + 4 + 64
    assert check_hll(hll_array(target=0, registers=registers, aux=(*aux, 0, 0), lg_arr=2, flags=0)) == 8 + 16 + 64
    assert check_hll(hll_array(target=0, aux=(0, 0, 0, 0), flags=0)) == 8 + 4 + 64  # updatable, default table
    full_value = hll_array(target=0, registers=bytes([0xFF]) + bytes(7), aux=((63 << 26) | 0, (15 << 26) | 1))
    assert check_hll(full_value) == 8 + 4 + 64


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (hll(coupons=(5,))[:7], f"{HLL} is 7 bytes, shorter than its 8-byte header"),
        (hll(family=6), f"{HLL} declares family id = 6, outside 7..7"),
        (hll(family=8), f"{HLL} declares family id = 8, outside 7..7"),
        (hll(version=2), f"{HLL} declares serial version = 2, outside 1..1"),
        (hll(version=0), f"{HLL} declares serial version = 0, outside 1..1"),
        (hll(lg_k=3, lg_arr=2), f"{HLL} declares lg_k = 3, outside 4..21"),
        (hll(lg_k=22, lg_arr=2), f"{HLL} declares lg_k = 22, outside 4..21"),
        (hll(flags=9), f"{HLL} is big-endian, which this server does not read"),
        (hll(mode=3), f"{HLL} declares mode = 3, outside 0..2"),
        (hll(mode=3 << 2), f"{HLL} declares target HLL type = 3, outside 0..2"),
        (hll(mode=0x10), f"{HLL} declares an unknown mode byte 0x10"),
        (hll(mode=0x80), f"{HLL} declares an unknown mode byte 0x80"),
        (hll(lg_arr=1), f"{HLL} declares lg_arr = 1, outside 2..4"),
        (hll(lg_arr=5, lg_k=4), f"{HLL} declares lg_arr = 5, outside 2..4"),
        (hll(preamble=3), f"{HLL} declares preamble ints (list) = 3, outside 2..2"),
        (hll(current=SET, preamble=2, coupons=(1,)), f"{HLL} declares preamble ints (set) = 2, outside 3..3"),
        (hll(current=SET, coupons=(1,))[:11], f"{HLL} is 11 bytes, shorter than its 12-byte header"),
        (hll(count=5, coupons=(1, 2, 3, 4), slots=5), f"{HLL} declares coupon count = 5, outside 0..4"),
        (hll(coupons=(5,), flags=8 | 4), f"{HLL} is flagged empty but declares 1 coupons"),
        (
            hll(current=SET, lg_arr=3, coupons=(1, 2, 3, 4, 5, 6, 7), flags=0),
            f"{HLL} declares 7 coupons, more than its hash set of 2^3 holds",
        ),
        (hll(coupons=(5,), tail=b"\x00" * 4), f"{HLL} is 16 bytes but its header implies 12"),
        (hll(coupons=(5,), flags=0, slots=3), f"{HLL} is 20 bytes but its header implies 24"),
        (hll(coupons=(5, 0), count=2), f"{HLL} declares 2 coupons but holds 1 distinct ones"),
        (hll(coupons=(5, 5)), f"{HLL} declares 2 coupons but holds 1 distinct ones"),
        (hll(coupons=(5, 6), count=1, slots=1, tail=b""), f"{HLL} is 16 bytes but its header implies 12"),
        (hll(coupons=(5, 6), count=1, flags=0), f"{HLL} declares 1 coupons but holds 2 distinct ones"),
    ],
)
def test_coupon_lists_and_sets_refused(data, message):
    refused(check_hll, data, message)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (hll_array(target=2, preamble=9), f"{HLL} declares preamble ints = 9, outside 10..10"),
        (hll_array(target=2, preamble=11), f"{HLL} declares preamble ints = 11, outside 10..10"),
        (hll_array(target=2)[:39], f"{HLL} is 39 bytes, shorter than its 40-byte header"),
        (hll_array(target=2, cur_min=64), f"{HLL} declares cur_min = 64, outside 0..63"),
        (hll_array(target=2, cur_min=49), f"{HLL} declares cur_min = 49, outside 0..48"),
        (hll_array(target=2, tail=b"\x00"), f"{HLL} is 57 bytes but its header implies 56"),
        (hll_array(target=1, registers=bytes(12)), f"{HLL} is 52 bytes but its header implies 53"),
        (hll_array(target=2, registers=bytes([64]) + bytes(15)), f"{HLL} has a register above 63"),
        (hll_array(target=0, lg_arr=5), f"{HLL} declares lg_aux_arr = 5, outside 0..4"),
        (hll_array(target=0, aux_count=17), f"{HLL} declares aux count = 17, outside 0..16"),
        (hll_array(target=0, aux=(0, 0, 0), flags=0), f"{HLL} has an aux table of 3 entries, not a power of two"),
        (hll_array(target=0, aux=(0, 0), flags=0), f"{HLL} has an aux table of 2 entries, not a power of two"),
        (hll_array(target=0, aux=(0,) * 32, flags=0), f"{HLL} has an aux table of 32 entries, not a power of two"),
        (
            hll_array(target=0, aux_count=3, lg_arr=1, aux=(0, 0), flags=0),
            f"{HLL} declares 3 aux entries in a table of 2",
        ),
        (hll_array(target=0, aux_count=1, aux=()), f"{HLL} is 48 bytes but its header implies 52"),
        (
            hll_array(target=0, aux=((15 << 26) | 0,)),
            f"{HLL} has 0 registers in its aux table but declares 1 aux entries",
        ),
        (
            hll_array(target=0, registers=bytes([0x0F]) + bytes(7), aux=((15 << 26) | 16,)),
            f"{HLL} has an aux entry (slot 16, value 15) that no register names",
        ),
        (
            hll_array(target=0, registers=bytes([0x0F]) + bytes(7), aux=((14 << 26) | 0,)),
            f"{HLL} has an aux entry (slot 0, value 14) that no register names",
        ),
        (
            hll_array(target=0, registers=bytes([0xFF]) + bytes(7), aux=((15 << 26) | 0, (16 << 26) | 0)),
            f"{HLL} has an aux entry (slot 0, value 16) that no register names",
        ),
        (
            hll_array(target=0, registers=bytes([0x0F]) + bytes(7), aux=((15 << 26) | 1,)),
            f"{HLL} has an aux entry for slot 1, whose register is not in the aux table",
        ),
        (
            hll_array(target=0, registers=bytes([0xF0]) + bytes(7), aux=((15 << 26) | 0,)),
            f"{HLL} has an aux entry for slot 0, whose register is not in the aux table",
        ),
        (
            hll_array(target=0, registers=bytes([0x0F]) + bytes(7), aux=(0, 0, 0, 0), aux_count=1, lg_arr=2, flags=0),
            f"{HLL} declares 1 aux entries but holds 0",
        ),
    ],
)
def test_hll_arrays_refused(data, message):
    refused(check_hll, data, message)


@pytest.mark.parametrize("lg_k", [4, 12])
@pytest.mark.parametrize("target", [ds.tgt_hll_type.HLL_4, ds.tgt_hll_type.HLL_6, ds.tgt_hll_type.HLL_8])
def test_hll_sketches_from_the_library_pass(lg_k, target):
    for n in (0, 3, 200, 5000):
        sketch = ds.hll_sketch(lg_k, target)
        for i in range(n):
            sketch.update(i)
        assert check_hll(sketch.serialize_compact()) > 64
        assert check_hll(sketch.serialize_updatable()) > 64


# -- theta ---------------------------------------------------------------------------------------

THETA = "the theta sketch"


def theta(
    *, preamble: int = 2, entries: int = 2, flags: int = 8 | 16, version: int = 3, family: int = 3, tail: bytes = b""
) -> bytes:
    head = bytes([preamble, version, family, 12, 0, flags, 0, 0])
    if preamble >= 2:
        head += struct.pack("<If", entries, 1.0)
    if preamble >= 3:
        head += struct.pack("<Q", 2**62)
    return head + b"\x07" * (8 * entries) + tail


def test_theta_sketches_that_pass_and_their_memory():
    assert check_compact_theta(theta(preamble=1, flags=8 | 4, entries=0)) == 64
    assert check_compact_theta(theta(preamble=1, flags=8, entries=1)) == 8 + 64  # a single item
    assert check_compact_theta(theta(preamble=2, entries=3)) == 24 + 64
    assert check_compact_theta(theta(preamble=3, entries=0)) == 64
    assert check_compact_theta(theta(preamble=3, entries=5)) == 40 + 64


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (theta()[:7], f"{THETA} is 7 bytes, shorter than its 8-byte header"),
        (theta(family=2), f"{THETA} declares family id = 2, outside 3..3"),
        (theta(family=4), f"{THETA} declares family id = 4, outside 3..3"),
        (theta(version=2), f"{THETA} declares serial version = 2, outside 3..3"),
        (theta(version=4), f"{THETA} declares serial version = 4, outside 3..3"),
        (theta(preamble=0, entries=0), f"{THETA} declares preamble longs = 0, outside 1..3"),
        (theta(preamble=4, entries=0), f"{THETA} declares preamble longs = 4, outside 1..3"),
        (theta(flags=8 | 1), f"{THETA} is big-endian, which this server does not read"),
        (theta(flags=16), f"{THETA} is not compact"),
        (theta(preamble=1, flags=8 | 4, entries=1), f"{THETA} is 16 bytes but its header implies 8"),
        (theta(preamble=1, flags=8, entries=0), f"{THETA} is 8 bytes but its header implies 16"),
        (theta(preamble=2, entries=0)[:15], f"{THETA} is 15 bytes, shorter than its 16-byte header"),
        (theta(preamble=3, entries=0)[:23], f"{THETA} is 23 bytes, shorter than its 24-byte header"),
        (theta(entries=2, tail=b"\x00"), f"{THETA} is 33 bytes but its header implies 32"),
        (
            theta(preamble=2, entries=0)[:8] + struct.pack("<If", (1 << 26) + 1, 1.0),
            f"{THETA} declares retained entries = {(1 << 26) + 1}, outside 0..{1 << 26}",
        ),
    ],
)
def test_theta_sketches_refused(data, message):
    refused(check_compact_theta, data, message)


def test_the_largest_theta_table_is_taken_at_its_header():
    data = theta(preamble=2, entries=0)[:8] + struct.pack("<If", 1 << 26, 1.0)
    refused(check_compact_theta, data, f"{THETA} is 16 bytes but its header implies {16 + 8 * (1 << 26)}")


# -- dispatch and whylogs messages ---------------------------------------------------------------


def test_check_sketch_dispatches_by_kind():
    assert check_sketch("theta", theta(preamble=2, entries=1)) == 8 + 64
    assert check_sketch("kll", kll_head(preamble=2, version=1, flags=1)) == 24 * 8
    assert check_sketch("hll", hll(coupons=(5,))) == 4 * 4 + 8 + 64
    assert check_sketch("frequent_items", fi(preamble=1, flags=1)) == 48 << 3
    with pytest.raises(KeyError):
        check_sketch("other", b"")
    assert set(sketch_check.SKETCH_CHECKS) == {"kll", "hll", "frequent_items"}


class Component:
    """A MetricComponentMessage as the check sees it: WhichOneof and the oneof's message."""

    def __init__(self, kind: str | None, sketch: bytes = b"") -> None:
        self.kind = kind
        if kind is not None:
            setattr(self, kind, SimpleNamespace(sketch=sketch))

    def WhichOneof(self, name: str) -> str | None:  # noqa: N802 - protobuf's name
        assert name == "value"
        return self.kind


def test_components_without_a_sketch_take_nothing():
    assert check_component(Component(None)) == 0
    assert check_component(Component("n")) == 0
    assert check_component(Component("d")) == 0
    assert check_component(Component("kll", kll_head(preamble=2, version=1, flags=1))) == 24 * 8


def test_a_chunk_adds_its_sketches_and_names_the_bad_one():
    good = {
        0: Component("n"),
        1: Component("kll", kll_head(preamble=2, version=1, flags=1)),
        2: Component("hll", hll(coupons=(5,))),
    }
    chunk = SimpleNamespace(metric_components=good)
    assert check_chunk("age", chunk, {1: "distribution/kll"}) == 24 * 8 + 4 * 4 + 8 + 64
    bad = SimpleNamespace(metric_components={**good, 3: Component("frequent_items", fi(family=9))})
    with pytest.raises(SketchCheckError) as caught:
        check_chunk("age", bad, {3: "frequent_items/frequent_strings"})
    assert str(caught.value) == (
        "column 'age', metric 'frequent_items/frequent_strings': the frequent-items sketch declares family id = 9, "
        "outside 10..10"
    )
    with pytest.raises(SketchCheckError) as unnamed:
        check_chunk("c" * 300, bad, {})
    assert str(unnamed.value).startswith(f"column {'c' * 200!r}, metric '#3': ")
    with pytest.raises(SketchCheckError) as long_path:
        check_chunk("age", bad, {3: "p" * 300})
    assert f"metric {'p' * 200!r}: " in str(long_path.value)


# -- what the first run of the mutation script found unpinned -----------------------------------------

KLL_FLOATS = "the KLL floats sketch"


def kll_floats_full(*, k: int = 8, offsets: tuple[int, ...] = (5,), preamble: int = 5) -> bytes:
    """A full KLL floats sketch: the doubles layout with 4-byte items and no trailing unused u32
    (5 preamble ints); its levels' weight is its n."""
    capacity = kll_capacity(k, 8, len(offsets))
    bounds = [*offsets, capacity]
    n = sum((high - low) << h for h, (low, high) in enumerate(zip(bounds, bounds[1:])))
    head = kll_head(preamble=preamble, version=1, flags=0, k=k)
    body = struct.pack("<QHBB", n, k, len(offsets), 0) + b"\x00" * (4 * (preamble - 5))
    body += b"".join(struct.pack("<I", o) for o in offsets)
    return head + body + b"\x00" * 8 + b"\x00" * (4 * (capacity - offsets[0]))


def test_kll_floats_sketches_that_pass_and_their_memory():
    # memory: 3 * 4 bytes * k when empty or of one item; else 4 bytes * capacity + 4 per level + 64
    assert sketch_check.check_kll_floats(kll_head(preamble=2, version=1, flags=1)) == 3 * 4 * 8
    assert sketch_check.check_kll_floats(kll_head(preamble=2, version=2, flags=4, k=200) + b"\x00" * 4) == 3 * 4 * 200
    assert sketch_check.check_kll_floats(kll_floats_full()) == 4 * 8 + 4 + 64  # 3 of 8 retained
    assert sketch_check.check_kll_floats(kll_floats_full(offsets=(6, 10))) == 4 * 16 + 8 + 64


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (kll_head(preamble=2, version=2, flags=4) + b"\x00" * 8, f"{KLL_FLOATS} is 16 bytes but its header implies 12"),
        (kll_floats_full(preamble=6), f"{KLL_FLOATS} declares preamble ints = 6, outside 5..5"),  # the doubles layout
        (kll_floats_full()[:-1], f"{KLL_FLOATS} is 43 bytes but its header implies 44"),
        (kll_head(preamble=2, version=1, flags=1, family=10), f"{KLL_FLOATS} declares family id = 10, outside 15..15"),
    ],
)
def test_kll_floats_sketches_refused(data, message):
    refused(sketch_check.check_kll_floats, data, message)


def test_kll_floats_sketches_from_the_library_pass():
    sketch = ds.kll_floats_sketch(200)
    for value in range(1000):
        sketch.update(float(value))
    data = sketch.serialize()
    assert data[0] == 5 and sketch_check.check_kll_floats(data) > 4 * 200
    refused(
        sketch_check.check_kll_floats,
        data + b"\x00",
        f"{KLL_FLOATS} is {len(data) + 1} bytes but its header implies {len(data)}",
    )


def test_a_doubles_sketch_is_not_a_floats_sketch():
    refused(sketch_check.check_kll_floats, kll_full(), f"{KLL_FLOATS} declares preamble ints = 6, outside 5..5")


def test_hll4_aux_entries_after_empty_slots_are_read():
    registers = bytes([0x0F, 0xF0, 0, 0, 0, 0, 0, 0])  # slot 0 (low nibble) and slot 3 (high nibble) hold 15
    aux = (0, (20 << 26) | 0, 0, (15 << 26) | 3)  # an updatable table: empty slots before and between
    assert check_hll(hll_array(target=0, registers=registers, aux=aux, lg_arr=2, flags=0)) == 8 + 16 + 64


def test_the_aux_table_is_not_read_as_registers():
    """The first aux entry's first byte is 0x0F (slot 15): read as a register byte it would count
    one more register in the aux table."""
    registers = bytes(7) + bytes([0xF0])  # slot 15, the high nibble of the last byte, holds 15
    assert check_hll(hll_array(target=0, registers=registers, aux=((20 << 26) | 15,))) == 8 + 4 + 64


def test_an_updatable_default_aux_table_may_be_as_large_as_k():
    assert check_hll(hll_array(target=0, aux=(0,) * 16, flags=0)) == 8 + 4 + 64  # lg_k 4: 16 entries
    refused(
        check_hll,
        hll_array(target=0, aux=(0,) * 32, flags=0),
        f"{HLL} has an aux table of 32 entries, not a power of two",
    )
