"""The drift scoring's shortcuts (column_stats.drift_scores): each KLL sketch's quantiles taken once
and reused while the sketch is unchanged, and the chi-square p-values of all columns in one call,
give the very numbers of the uncached path and of whylogs' own calculation."""

import numpy as np
import pandas as pd
import pytest
import whylogs as why
from whylogs.viz.drift.column_drift_algorithms import calculate_drift_scores

from whylogs_songbird import column_stats as C

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/column_stats.py")


def batch(seed: int, rows: int = 600, shift: float = 0.0) -> pd.DataFrame:
    r = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": r.normal(shift, 1, rows),
            "y": r.exponential(1 + shift, rows),
            "city": r.choice(["a", "b", "c", "d"], rows, p=[0.4, 0.3, 0.2, 0.1] if shift else [0.1, 0.2, 0.3, 0.4]),
            "code": r.choice(["p", "q"] + (["new"] if shift > 1 else []), rows),
            "flag": r.choice(["yes", "no"], rows),
        }
    )


def test_cached_quantiles_give_the_scores_of_the_uncached_path():
    reference = why.log(batch(1)).view()
    targets = [why.log(batch(seed, shift=shift)).view() for seed, shift in ((2, 0.0), (3, 0.4), (4, 2.0))]
    C.sketch_quantiles.clear()
    cached = [C.drift_scores(target=t, reference=reference) for t in targets]
    cached += [C.drift_scores(target=targets[1], reference=targets[0])]  # a bucket against the previous one
    uncached = []
    for target, ref in [(t, reference) for t in targets] + [(targets[1], targets[0])]:
        C.sketch_quantiles.clear()
        uncached.append(C.drift_scores(target=target, reference=ref))
    assert cached == uncached
    assert {s.algorithm for s in cached[2].values()} == {"ks", "chi-square"}
    assert cached[2]["x"].category == "DRIFT"


def test_a_sketch_that_took_values_since_is_read_again():
    quantiles = C._Quantiles(size=2)
    view = why.log(pd.DataFrame({"x": [1.0, 2.0, 3.0]})).view()
    sketch = view.get_column("x").get_metric("distribution").kll.value
    points = quantiles.points([0.0, 0.5, 1.0])
    assert quantiles.points((0.0, 0.5, 1.0)) is points  # equal points: the one tuple, compared by identity
    assert list(quantiles(sketch, points)) == [1.0, 2.0, 3.0]
    sketch.update(10.0)
    assert list(quantiles(sketch, points)) == list(sketch.get_quantiles(list(points)))
    assert quantiles(sketch, points)[-1] == 10.0
    for value in (5.0, 6.0):  # other sketches push it out of a cache of two
        other = why.log(pd.DataFrame({"x": [value]})).view().get_column("x").get_metric("distribution").kll.value
        assert list(quantiles(other, points)) == [value] * 3
    assert len(quantiles._entries) == 2


def test_chi_square_numbers_are_whylogs_own_exactly():
    reference = why.log(batch(5)).view()
    for seed, shift in ((6, 0.0), (7, 0.5), (8, 2.0)):  # 2.0: a category the reference never saw
        target = why.log(batch(seed, shift=shift)).view()
        ours = C.drift_scores(target=target, reference=reference)
        raw = calculate_drift_scores(target_view=target, reference_view=reference, with_thresholds=True)
        for name in ("city", "code", "flag"):
            assert ours[name].algorithm == raw[name]["algorithm"] == "chi-square"
            assert ours[name].statistic == raw[name]["statistic"], name
            assert ours[name].pvalue == C.finite(raw[name]["pvalue"]), name
            assert ours[name].category == raw[name]["drift_category"], name
    assert ours["code"].statistic == float("inf") and ours["code"].category == "DRIFT"
