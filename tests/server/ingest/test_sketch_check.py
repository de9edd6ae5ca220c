"""The pure-Python sketch check (issue 20): it accepts every sketch whylogs and the sketch library
write, with any parameters whylogs offers, and refuses crafted headers with a message naming the
column, the metric and the field. Unit tests of pure logic: real sketches, no fakes."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest
import whylogs as why
import whylogs_sketching as ds
from conftest import make_profile_bytes
from profile_crafting import edit_sketch, huge_frequent_items_map, set_bytes, sketch_paths
from whylogs.core.metrics.metrics import MetricConfig
from whylogs.core.schema import DatasetSchema

from whylogs_songbird.server.profile_check import ProfileCheckError, check_profile_bytes
from whylogs_songbird.server.sketch_check import (
    MAX_FI_LG_MAP,
    SketchCheckError,
    check_compact_theta,
    check_frequent_strings,
    check_hll,
    check_kll_doubles,
    kll_capacity,
)


def _frames() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(7)
    n = 3000
    return {
        "ints": pd.DataFrame({"a": rng.integers(-1000, 1000, n), "b": rng.integers(0, 3, n)}),
        "floats": pd.DataFrame({"x": rng.normal(size=n), "y": rng.random(n) * 1e300, "z": [0.5] * n}),
        "strings": pd.DataFrame({"s": [f"value-{i}" for i in rng.integers(0, 2000, n)], "u": ["ü€" * 40] * n}),
        "empty": pd.DataFrame({"e": pd.Series([], dtype=float), "t": pd.Series([], dtype=str)}),
        "nulls": pd.DataFrame({"n": [None] * 10, "f": [np.nan] * 10, "mixed": [1, "a", None, 2.5, True] * 2}),
        "one-row": pd.DataFrame({"a": [1], "s": ["x"], "f": [np.inf]}),
        "wide-cardinality": pd.DataFrame({"id": [f"id-{i}" for i in range(50_000)]}),
    }


@pytest.mark.parametrize("name", list(_frames()))
def test_every_sketch_of_real_profiles_passes(name):
    data = why.log(_frames()[name]).view().serialize()
    shape = check_profile_bytes(data, max_columns=100)
    assert shape.sketch_memory > 0
    assert sketch_paths(data), "the profile has sketches to check"


@pytest.mark.parametrize(
    "config",
    [
        MetricConfig(hll_lg_k=4, kll_k=8, fi_lg_max_k=3, large_kll_k=False),
        MetricConfig(hll_lg_k=21, kll_k_large=8192, fi_lg_max_k=16),
        MetricConfig(hll_lg_k=16, kll_k=200, fi_lg_max_k=12, large_kll_k=False),
    ],
    ids=["smallest", "largest", "custom"],
)
def test_profiles_with_other_sketch_parameters_pass(config):
    frame = _frames()["strings"].assign(x=np.random.default_rng(1).normal(size=3000))
    schema = DatasetSchema(default_configs=config)
    data = why.log(frame, schema=schema).view().serialize()
    check_profile_bytes(data, max_columns=100)


def test_sketches_of_every_size_and_mode_pass():
    """Sketches straight from the library, through every mode: empty, one item, growing, compact
    and updatable HLL of each target type, purged frequent-items maps, theta."""
    r = random.Random(3)
    for k in (8, 20, 200, 1024, 4096):
        assert check_kll_doubles(ds.kll_doubles_sketch(k).serialize())
        for n in (1, 2, 7, 100, 5000, 100_000):
            sketch = ds.kll_doubles_sketch(k)
            for _ in range(n):
                sketch.update(r.random())
            check_kll_doubles(sketch.serialize())
    for lg_k in (4, 8, 12, 21):
        for target in (ds.tgt_hll_type.HLL_4, ds.tgt_hll_type.HLL_6, ds.tgt_hll_type.HLL_8):
            sketch = ds.hll_sketch(lg_k, target)
            for n in (0, 1, 5, 30, 200, 3000, 60_000):
                while sketch.get_estimate() < n:
                    sketch.update(r.random())
                check_hll(sketch.serialize_compact())
                check_hll(sketch.serialize_updatable())
    for lg in (3, 5, 10, 14):
        sketch = ds.frequent_strings_sketch(lg)
        check_frequent_strings(sketch.serialize())
        for n in (1, 5, 100, 5000):
            for _ in range(n):
                sketch.update(str(r.random())[: r.randint(0, 12)], r.randint(1, 5))
            check_frequent_strings(sketch.serialize())
    theta = ds.update_theta_sketch()
    check_compact_theta(theta.compact().serialize())
    for n in (1, 10, 10_000):
        for _ in range(n):
            theta.update(r.random())
        check_compact_theta(theta.compact().serialize())


def test_the_kll_capacity_is_the_librarys():
    """Where a full sketch's retained items end is the capacity ``kll_capacity`` computes."""
    r = random.Random(5)
    for k in (8, 9, 100, 1000):
        sketch = ds.kll_doubles_sketch(k)
        for i in range(200_000):
            sketch.update(r.random())
            if i in (k, 10 * k, 199_999):
                data = sketch.serialize()
                levels = data[18]
                first = int.from_bytes(data[24:28], "little")
                assert kll_capacity(k, 8, levels) - first == sketch.get_num_retained()


def test_the_crafted_profile_of_issue_20_is_refused_naming_column_metric_and_field():
    data = make_profile_bytes()
    crafted = huge_frequent_items_map(data, "n")
    with pytest.raises(ProfileCheckError) as refused:
        check_profile_bytes(crafted, max_columns=100)
    message = str(refused.value)
    assert "column 'n'" in message and "metric 'frequent_items/frequent_strings'" in message
    assert "lg_max_map_size = 64" in message
    # a map within the sketch library's reach but beyond the bound is refused too
    too_big = huge_frequent_items_map(data, "n", lg=MAX_FI_LG_MAP + 1)
    with pytest.raises(ProfileCheckError, match=f"lg_max_map_size = {MAX_FI_LG_MAP + 1}"):
        check_profile_bytes(too_big, max_columns=100)


@pytest.mark.parametrize(
    ("path", "changes", "field"),
    [
        ("distribution/kll", {2: 14}, "family id"),
        ("distribution/kll", {1: 9}, "serial version"),
        ("distribution/kll", {6: 4}, "m = 4"),
        ("distribution/kll", {18: 200}, "num_levels"),
        ("distribution/kll", {24: 255, 25: 255, 26: 255, 27: 255}, "level offsets"),
        ("cardinality/hll", {3: 30}, "lg_k = 30"),
        ("cardinality/hll", {2: 3}, "family id"),
        ("frequent_items/frequent_strings", {4: 2}, "lg_cur_map_size = 2"),
        ("frequent_items/frequent_strings", {8: 255}, "active items"),
        ("frequent_items/frequent_strings", {0: 9}, "preamble longs"),
    ],
)
def test_bad_header_fields_are_named(path, changes, field):
    frame = pd.DataFrame({"c": [f"v{i % 50}" for i in range(5000)], "x": [i * 0.25 for i in range(5000)]})
    data = why.log(frame).view().serialize()
    column = "x" if path.startswith("distribution") else "c"
    crafted = edit_sketch(data, column, path, set_bytes(changes))
    with pytest.raises(ProfileCheckError, match=f"column '{column}', metric '{path}'") as refused:
        check_profile_bytes(crafted, max_columns=100)
    assert field in str(refused.value)


def test_item_counts_must_match_the_byte_length():
    sketch = ds.frequent_strings_sketch(10)
    for i in range(20):
        sketch.update(f"item-{i}")
    data = sketch.serialize()
    check_frequent_strings(data)
    for broken in (data[:-1], data + b"\0", data[:40]):
        with pytest.raises(SketchCheckError):
            check_frequent_strings(broken)
    kll = ds.kll_doubles_sketch(200)
    for i in range(1000):
        kll.update(float(i))
    data = kll.serialize()
    for broken in (data[:-8], data + bytes(8)):
        with pytest.raises(SketchCheckError, match="header implies"):
            check_kll_doubles(broken)
