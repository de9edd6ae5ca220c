"""The drift scoring's shortcuts (column_stats.drift_scores): each KLL sketch's quantiles taken once
and reused while the sketch is unchanged, and the chi-square p-values of all columns in one call,
give the very numbers of the uncached path and of whylogs' own calculation."""

import numpy as np
import pandas as pd
import pytest
import whylogs as why
import whylogs_sketching as ds
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


def test_known_quantiles_are_read_back_only_for_their_own_points_and_an_unchanged_sketch():
    view = why.log(batch(5)).view()
    sketch = view.get_column("x").get_metric("distribution").kll.value
    known = C.known_quantiles(sketch, (0.05, 0.5, 0.95))
    assert known is not None and known.values == tuple(sketch.get_quantiles([*C.KS_POINTS, 0.05, 0.5, 0.95]))
    quantiles = C._Quantiles()
    ks = quantiles.points(C.KS_POINTS)
    elsewhere = known._replace(fractions=(0.5, *known.fractions[1:]))  # taken at other points: ignored
    quantiles.remember(sketch, elsewhere)
    assert quantiles._kept(sketch, ks) is None
    quantiles.remember(sketch, known._replace(values=(1.0, 2.0)))  # not one value a point: ignored
    assert quantiles._kept(sketch, ks) is None
    fake = known._replace(values=tuple(v + 1 for v in known.values))  # read back, not taken again
    quantiles.remember(sketch, fake)
    assert list(quantiles(sketch, ks)) == list(fake.values[: len(ks)])
    assert quantiles.along(sketch, (0.05, 0.5, 0.95)) == list(fake.values[len(ks) :])
    assert quantiles.along(sketch, (0.25,)) == sketch.get_quantiles([0.25])  # other points: taken
    assert quantiles.split(sketch, ks) == known.split
    sketch.update(1e9)  # took a value since: everything taken again
    assert list(quantiles(sketch, ks)) == sketch.get_quantiles(list(ks))
    assert quantiles.along(sketch, (0.05, 0.5, 0.95)) == sketch.get_quantiles([0.05, 0.5, 0.95])
    assert C.known_quantiles(ds.kll_doubles_sketch(200)) is None  # an empty sketch has none


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


def awkward(seed: int, rows: int, shift: float) -> pd.DataFrame:
    r = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "normal": r.normal(shift, 1, rows),
            "constant": np.full(rows, 3.0),
            "tiny": [1.5] + [None] * (rows - 1),
            "category": r.choice(["a", "b", "c"], rows),
            "mostly_null": [None] * max(rows - 2, 0) + [1.0, 2.0][:rows],
            "mixed": [str(v) if i % 3 == 0 else v for i, v in enumerate(r.normal(0, 1, rows))],
        }
    )


def test_drift_read_from_the_sketches_is_that_of_whylogs_drift_map_exactly():
    """drift_scores scores standard profiles from their columns' sketches (ProfileColumns), without
    whylogs' per-column objects: the very numbers, choices and order of calculate_drift_scores with
    the drift map (the path any other profile takes), the fallback of a NaN p-value included."""
    algorithms = set()
    for rows_a, rows_b, shift in ((300, 400, 0.5), (7, 3, 0.0), (1, 1, 1.0)):
        reference = why.log(awkward(rows_a, rows_a, 0.0)).view()
        target = why.log(awkward(rows_b + 1, rows_b, shift)).view()
        assert C.profile_columns(target).standard and C.profile_columns(reference).standard
        by_map = C._drift_scores_by_map(target, reference)
        ours = C.drift_scores(target=C.profile_columns(target), reference=C.profile_columns(reference))
        assert ours == by_map and list(ours) == list(by_map)
        assert C.drift_scores(target=target, reference=reference) == by_map
        algorithms |= {s.algorithm for s in ours.values()}
    assert algorithms == {"ks", "chi-square"}
    assert "normal" not in ours  # one value each: no KS p-value, and the default choice has nothing else


def test_a_profile_with_other_metrics_is_scored_by_whylogs_drift_map():
    from whylogs.core.view.column_profile_view import ColumnProfileView
    from whylogs.core.view.dataset_profile_view import DatasetProfileView

    def without_counts(seed: int) -> DatasetProfileView:
        column = why.log(batch(seed)).view().get_column("x")
        kept = {name: column.get_metric(name) for name in ("distribution", "types")}
        return DatasetProfileView(
            columns={"x": ColumnProfileView(metrics=kept)}, dataset_timestamp=None, creation_timestamp=None
        )

    target, reference = without_counts(1), without_counts(2)
    assert not C.profile_columns(target).standard
    assert C.drift_scores(target=target, reference=reference) == C._drift_scores_by_map(target, reference)
    assert C.drift_scores(target=target, reference=reference)["x"].algorithm == "ks"


class CountingSketch:
    """A stand-in KLL sketch whose quantile at fraction f is 10 f; it notes every call."""

    def __init__(self) -> None:
        self.calls: list[list[float]] = []

    def get_n(self) -> int:
        return 10

    def get_quantiles(self, fractions: list[float]) -> list[float]:
        self.calls.append(list(fractions))
        return [10 * f for f in fractions]


def test_a_column_read_keeps_its_ks_quantiles_for_the_drift_that_follows():
    quantiles, sketch = C._Quantiles(size=4), CountingSketch()
    assert quantiles.along(sketch, (0.05, 0.5, 0.95)) == [0.5, 5.0, 9.5]
    assert sketch.calls == [[*C.KS_POINTS, 0.05, 0.5, 0.95]]  # one call: the KS points and the band
    ks = quantiles.points(np.linspace(0, 1, 100))  # as the KS test asks (whylogs' default points)
    assert list(quantiles(sketch, ks)) == [10 * p for p in C.KS_POINTS] and len(sketch.calls) == 1
    assert quantiles.along(sketch, (0.25,)) == [2.5] and sketch.calls[-1] == [0.25]  # kept: only the band
    real = why.log(batch(3)).view().get_column("x").get_metric("distribution").kll.value
    assert quantiles.along(real, (0.05, 0.5, 0.95)) == real.get_quantiles([0.05, 0.5, 0.95])
    assert list(quantiles(real, ks)) == real.get_quantiles(list(C.KS_POINTS))


def test_a_merge_lists_the_columns_as_the_views_first_do_whatever_the_process():
    """whylogs' own merge lists the columns in a set's order (string hashes differ per process), so
    a bucket merged in one process would order its columns unlike one merged in another."""
    names = [f"column_{i:02d}" for i in (7, 3, 11, 0, 9, 5, 1, 10, 2, 8, 4, 6)]
    first = why.log(pd.DataFrame({name: [1.0, 2.0] for name in names[:8]})).view()
    second = why.log(pd.DataFrame({name: [3.0] for name in [*names[8:], names[0]]})).view()
    assert list(C.merge_views([first, second]).get_columns()) == names
    assert list(C.merge_views([second, first]).get_columns()) == [*names[8:], names[0], *names[1:8]]
    assert C.merge_views([first]) is first


def test_the_ks_statistic_is_that_of_whylogs_loop_exactly():
    """Each sketch's CDF at its own quantiles is kept (``_Quantiles.split``) and only the other's is
    evaluated at them: the largest difference is whylogs' own KS statistic, bit for bit, ties and
    repeated quantiles included."""
    from whylogs.viz.drift.column_drift_algorithms import KS

    def frame(seed: int, shift: float) -> pd.DataFrame:
        r = np.random.default_rng(seed)
        return pd.DataFrame(
            {
                "normal": r.normal(shift, 1, 3000),
                "few": r.integers(0, 4 + int(shift), 3000),  # many repeated quantiles
                "constant": np.full(3000, 2.0 + shift),
                "tail": r.exponential(1 + shift, 3000),
            }
        )

    views = [why.log(frame(seed, shift)).view() for seed, shift in ((1, 0.0), (2, 0.0), (3, 1.0))]
    C.sketch_quantiles.clear()
    for target, reference in ((views[1], views[0]), (views[2], views[0]), (views[2], views[1]), (views[0], views[2])):
        ours = C.drift_scores(target=C.profile_columns(target), reference=C.profile_columns(reference))
        for name in ("normal", "few", "constant", "tail"):
            sketches = [v.get_column(name).get_metric("distribution").kll.value for v in (target, reference)]
            whylogs = KS()._compute_ks_score(*sketches, with_thresholds=True)
            assert ours[name].algorithm == "ks" and ours[name].statistic == whylogs.statistic, name


def test_a_split_is_kept_until_its_sketch_changes_and_none_when_not_finite():
    import whylogs_sketching as ds

    quantiles = C._Quantiles(size=2)
    points = quantiles.points(C.KS_POINTS)
    sketch = ds.kll_doubles_sketch()
    for value in (1.0, 1.0, 2.0, 3.0):
        sketch.update(value)
    split = quantiles.split(sketch, points)
    assert split is not None and split.points == [1.0, 2.0, 3.0]  # distinct, ascending
    assert split.cdf == sketch.get_cdf([1.0, 2.0, 3.0])[:-1] == [0.0, 0.5, 0.75]
    assert quantiles.split(sketch, points) is split  # kept
    sketch.update(4.0)
    again = quantiles.split(sketch, points)
    assert again is not split and again is not None and again.points == [1.0, 2.0, 3.0, 4.0]
    unbounded = ds.kll_doubles_sketch()
    unbounded.update(1.0)
    unbounded.update(float("inf"))
    assert quantiles.split(unbounded, points) is None  # whylogs' own loop decides
    assert len(quantiles._splits) == 2
