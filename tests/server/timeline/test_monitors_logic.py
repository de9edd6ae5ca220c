"""Monitors (whylogs_songbird/monitors.py) as pure logic: parsing, thresholds, every metric, drift.

Timeline documents are written here by hand (the shape of ``docs/timeline.md``), so each test
says exactly which numbers a bucket holds and which failures they must give. The contract
(docs/timeline.md): ``max`` fails *above* max, ``min`` fails *below* min: a value equal to a
threshold passes. The messages are what a user reads to fix a file, so they are checked word for word.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from whylogs_songbird.monitors import (
    METRICS,
    THRESHOLD_METRICS,
    Failure,
    Monitor,
    MonitorsError,
    _explain,
    evaluate,
    load_monitors,
    loads_monitors,
    parse_monitors,
)

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/monitors.py")

DAY = 86_400_000
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC


def timeline(columns: dict[str, dict[str, Any]], buckets: int | None = None) -> dict[str, Any]:
    """A timeline document with ``buckets`` daily buckets (default: the length of the first series)."""
    if buckets is None:
        buckets = max((len(v) for s in columns.values() for v in s.values() if isinstance(v, list)), default=0)
    return {
        "granularity": "day",
        "buckets": [{"start": T0 + i * DAY, "end": T0 + (i + 1) * DAY, "profiles": 1} for i in range(buckets)],
        "columns": columns,
    }


def one(metric: str, *, min: float | None = None, max: float | None = None, columns: Any = ("a",)) -> Any:
    return parse_monitors({"monitor": [{"columns": list(columns), "metric": metric, "min": min, "max": max}]})


def bad(text: str) -> str:
    with pytest.raises(MonitorsError) as caught:
        loads_monitors(text, source="m.toml")
    return str(caught.value)


MONITOR = '[[monitor]]\ncolumns = ["a"]\n'


# -- parsing: what a file holds, and what its mistakes say ----------------------------------------


def test_a_full_file_is_read_with_every_field():
    parsed = loads_monitors(
        'reference = "training"\ngranularity = "week"\nsegment = "region=eu"\n'
        '[[monitor]]\nname = "no drift"\ncolumns = ["*"]\nmetric = "drift"\nfail_on = "possible_drift"\n'
        'against = "previous"\n'
        '[[monitor]]\ncolumns = "score"\nmetric = "mean"\nmin = 1\nmax = 2.5\n'
    )
    assert (parsed.reference, parsed.granularity, parsed.segment) == ("training", "week", "region=eu")
    drift, mean = parsed.monitors
    assert drift == Monitor(
        name="no drift", columns=("*",), metric="drift", fail_on="possible_drift", against="previous"
    )
    assert (drift.threshold, drift.label) == ("possible_drift", "no drift")
    assert mean.columns == ("score",)  # one name is a list of one
    assert (mean.min, mean.max, mean.fail_on, mean.against) == (1.0, 2.5, None, "reference")
    assert isinstance(mean.min, float) and isinstance(mean.max, float)


def test_defaults_of_a_file_and_of_a_drift_monitor():
    parsed = loads_monitors(MONITOR + 'metric = "drift"\n')
    assert (parsed.reference, parsed.granularity, parsed.segment) == (None, None, None)
    (drift,) = parsed.monitors
    assert (drift.fail_on, drift.threshold, drift.against, drift.name) == (None, "drift", "reference", None)


@pytest.mark.parametrize(
    ("monitor", "label"),
    [
        ({"metric": "drift"}, "drift vs reference"),
        ({"metric": "drift", "against": "previous"}, "drift vs previous"),
        ({"metric": "count", "min": 10}, "count >= 10"),
        ({"metric": "null_fraction", "max": 0.05}, "null_fraction <= 0.05"),
        ({"metric": "mean", "min": -1.5, "max": 2e6}, "mean >= -1.5 and <= 2e+06"),
        ({"metric": "mean", "min": 0, "max": 1, "name": "sane"}, "sane"),
    ],
)
def test_labels_name_the_metric_and_its_bounds(monitor, label):
    assert parse_monitors({"monitor": [{"columns": ["a"], **monitor}]}).monitors[0].label == label


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            MONITOR + 'metric = "nope"\nmax = 1\n',
            "m.toml: monitor 1, metric: unknown metric 'nope'; valid metrics: drift, count, null_count, "
            "null_fraction, mean, stddev, min, p5, p50, p95, max, distinct, top_share",
        ),
        (
            MONITOR + 'metric = "drift"\nfail_on = "maybe"\n',
            'm.toml: monitor 1, fail_on: unknown fail_on \'maybe\'; give "drift" or "possible_drift"',
        ),
        (
            'granularity = "minute"\n' + MONITOR + 'metric = "drift"\n',
            "m.toml: granularity: unknown granularity 'minute'; give one of hour, day, week, month",
        ),
        (
            MONITOR + 'metric = "drift"\nagainst = "yesterday"\n',
            'm.toml: monitor 1, against: unknown against \'yesterday\'; give "reference" or "previous"',
        ),
        (
            'colour = "red"\n' + MONITOR + 'metric = "drift"\n',
            "m.toml: unknown top-level key 'colour'; valid keys: reference, granularity, segment, sessions, "
            "datasets, [[monitor]], [[notify]]",
        ),
        (
            'datasets = ["model-1"]\n' + MONITOR + 'metric = "drift"\n',
            "m.toml: datasets: 'model-1' is no dataset: name datasets ORG/DATASET, e.g. org-1234/model-1",
        ),
        (
            MONITOR + 'metric = "drift"\n' + MONITOR + 'metric = "count"\nmax = 1\nthreshold = 3\n',
            "m.toml: monitor 2: unknown key 'threshold'; valid keys: name, columns, metric, fail_on, against, min, max",
        ),
        (
            '[[monitor]]\nmetric = "drift"\n',
            "m.toml: monitor 1, columns: missing (every monitor needs columns and metric)",
        ),
        (MONITOR, "m.toml: monitor 1, metric: missing (every monitor needs columns and metric)"),
        (
            '[[monitor]]\ncolumns = []\nmetric = "drift"\n',
            'm.toml: monitor 1, columns: empty; give column names, or "*" for every column',
        ),
        (
            MONITOR + 'metric = "drift"\nmax = 1\n',
            'm.toml: monitor 1: a drift monitor takes fail_on = "drift" or "possible_drift", not min/max',
        ),
        (
            MONITOR + 'metric = "drift"\nmin = 1\n',
            'm.toml: monitor 1: a drift monitor takes fail_on = "drift" or "possible_drift", not min/max',
        ),
        (
            MONITOR + 'metric = "count"\nfail_on = "drift"\nmax = 1\n',
            "m.toml: monitor 1: fail_on is for drift monitors; a count monitor takes min and/or max",
        ),
        (
            MONITOR + 'metric = "p95"\nagainst = "previous"\nmax = 1\n',
            "m.toml: monitor 1: against is for drift monitors; a p95 monitor takes min and/or max",
        ),
        (MONITOR + 'metric = "stddev"\n', "m.toml: monitor 1: a stddev monitor needs min and/or max (e.g. max = 0.05)"),
        (MONITOR + 'metric = "count"\nmin = 2\nmax = 1\n', "m.toml: monitor 1: min (2.0) is above max (1.0)"),
        (MONITOR + 'metric = "count"\nmax = nan\n', "m.toml: monitor 1, max: must be a finite number"),
        (MONITOR + 'metric = "count"\nmin = -inf\n', "m.toml: monitor 1, min: must be a finite number"),
        (MONITOR + 'metric = "count"\nmax = inf\n', "m.toml: monitor 1, max: must be a finite number"),
        ('reference = "x"\n', "m.toml: no monitors; add at least one [[monitor]] table with columns and metric"),
        ("", "m.toml: no monitors; add at least one [[monitor]] table with columns and metric"),
    ],
)
def test_mistakes_say_where_and_what_to_fix(text, message):
    assert bad(text) == message


def test_every_problem_of_a_file_is_listed_at_once():
    text = 'colour = 1\n[[monitor]]\ncolumns = ["a"]\nmetric = "nope"\n[[monitor]]\nmetric = "drift"\n'
    message = bad(text)
    assert message.startswith("m.toml: ")
    for part in ("unknown top-level key 'colour'", "monitor 1, metric: unknown metric 'nope'", "monitor 2, columns"):
        assert part in message
    assert message.count("; ") >= 3


def test_a_file_that_is_not_toml_says_so():
    assert bad("[[monitor]\n").startswith("m.toml: not valid TOML (")


def test_min_equal_to_max_is_allowed():
    (monitor,) = loads_monitors(MONITOR + 'metric = "count"\nmin = 5\nmax = 5\n').monitors
    assert (monitor.min, monitor.max) == (5.0, 5.0)


def test_a_file_is_read_from_disk_or_says_why_not(tmp_path: Path):
    path = tmp_path / "checks.toml"
    path.write_text(MONITOR + 'metric = "count"\nmin = 1\n', encoding="utf-8")
    assert load_monitors(path).monitors[0].min == 1.0
    assert load_monitors(str(path)).monitors[0].min == 1.0
    with pytest.raises(MonitorsError) as caught:
        load_monitors(tmp_path / "missing.toml")
    assert str(caught.value) == f"monitors file {str(tmp_path / 'missing.toml')!r} does not exist"
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(MonitorsError) as caught:
        load_monitors(binary)
    assert str(caught.value) == f"monitors file {str(binary)!r} cannot be read (UnicodeDecodeError)"
    with pytest.raises(MonitorsError) as caught:
        load_monitors(tmp_path)  # a directory
    assert str(caught.value) == f"monitors file {str(tmp_path)!r} cannot be read (IsADirectoryError)"
    broken = tmp_path / "broken.toml"
    broken.write_text(MONITOR + 'metric = "count"\n', encoding="utf-8")
    with pytest.raises(MonitorsError) as caught:
        load_monitors(broken)
    assert str(caught.value).startswith(f"{broken}: monitor 1: a count monitor needs min and/or max")


def test_the_segment_of_a_file_is_kept_as_written():
    parsed = loads_monitors('segment = "region=eu,tier=gold"\n' + MONITOR + 'metric = "count"\nmin = 1\n')
    assert parsed.segment == "region=eu,tier=gold"


# -- thresholds: equal passes, beyond fails --------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "failed"),
    [(0.04, False), (0.05, False), (0.050001, True), (1.0, True)],
)
def test_max_fails_only_above_the_threshold(value, failed):
    failures = evaluate(one("null_fraction", max=0.05), timeline({"a": {"null_fraction": [value]}}))
    if not failed:
        assert failures == []
        return
    assert failures == [
        Failure(
            monitor="null_fraction <= 0.05",
            column="a",
            metric="null_fraction",
            bucket_start=T0,
            bucket_end=T0 + DAY,
            value=value,
            reason=f"null_fraction = {value:.6g} is above max 0.05",
        )
    ]


@pytest.mark.parametrize(
    ("value", "failed"),
    [(101, False), (100, False), (99.999, True), (-5, True)],
)
def test_min_fails_only_below_the_threshold(value, failed):
    failures = evaluate(one("count", min=100), timeline({"a": {"count": [value]}}))
    assert [f.reason for f in failures] == ([f"count = {value:.6g} is below min 100"] if failed else [])


@pytest.mark.parametrize(("value", "reason"), [(1, "below min 2"), (2, None), (3, None), (4, None), (5, "above max 4")])
def test_min_and_max_together_bound_both_sides(value, reason):
    failures = evaluate(one("mean", min=2, max=4), timeline({"a": {"mean": [value]}}))
    assert [f.reason.split(" is ")[1] for f in failures] == ([reason] if reason else [])


def test_a_zero_value_is_judged_like_any_other():
    document = timeline({"a": {"count": [0], "null_fraction": [0.0]}})
    assert [f.reason for f in evaluate(one("count", min=1), document)] == ["count = 0 is below min 1"]
    assert [f.reason for f in evaluate(one("null_fraction", max=-0.5), document)] == [
        "null_fraction = 0 is above max -0.5"
    ]


def test_negative_and_zero_thresholds():
    document = timeline({"a": {"min": [-3.0, -2.0, 0.0, 0.5]}})
    assert [f.value for f in evaluate(one("min", min=-2), document, "all")] == [-3.0]
    assert [f.value for f in evaluate(one("min", max=0), document, "all")] == [0.5]


@pytest.mark.parametrize("metric", THRESHOLD_METRICS)
def test_every_threshold_metric_reads_its_own_series(metric):
    # every series holds 10 except the monitored one, which holds 50: only it can fail max = 20
    columns = {"a": {name: [10.0] for name in THRESHOLD_METRICS}}
    columns["a"][metric] = [50.0]
    (failure,) = evaluate(one(metric, max=20), timeline(columns))
    assert (failure.metric, failure.value, failure.reason) == (metric, 50.0, f"{metric} = 50 is above max 20")
    columns["a"][metric] = [20.0]
    assert evaluate(one(metric, max=20), timeline(columns)) == []


def test_the_metrics_are_the_documented_ones():
    assert METRICS == (
        "drift", "count", "null_count", "null_fraction", "mean", "stddev", "min", "p5", "p50", "p95", "max",
        "distinct", "top_share",
    )  # fmt: skip
    assert METRICS[1:] == THRESHOLD_METRICS


def test_a_failure_reason_shows_six_significant_digits():
    (failure,) = evaluate(one("mean", max=1), timeline({"a": {"mean": [1234.56789]}}))
    assert failure.reason == "mean = 1234.57 is above max 1"
    assert failure.value == 1234.56789


def test_a_failure_as_json():
    (failure,) = evaluate(one("count", min=5), timeline({"a": {"count": [3]}}))
    assert failure.to_json() == {
        "monitor": "count >= 5",
        "column": "a",
        "metric": "count",
        "start": T0,
        "end": T0 + DAY,
        "value": 3.0,
        "reason": "count = 3 is below min 5",
    }


def test_a_bucket_without_the_value_is_not_a_failure():
    document = timeline({"a": {"mean": [None, 99.0]}, "b": {"count": [1, 2]}})
    assert [f.bucket_start for f in evaluate(one("mean", max=1), document, "all")] == [T0 + DAY]
    # a series shorter than the buckets, or missing altogether
    short = timeline({"a": {"mean": [99.0]}}, buckets=3)
    assert [f.bucket_start for f in evaluate(one("mean", max=1), short, "all")] == [T0]
    assert evaluate(one("p95", max=1), short, "all") == []
    assert evaluate(one("p95", max=1), {**short, "columns": {"a": {"p95": "not a list"}}}, "all") == []


# -- drift -----------------------------------------------------------------------------------------


def drift_doc(categories: list[str | None], prefix: str = "drift", p: list[Any] | None = None) -> dict[str, Any]:
    series: dict[str, Any] = {
        f"{prefix}_category": categories,
        f"{prefix}_p_value": p if p is not None else [0.01] * len(categories),
        f"{prefix}_algorithm": ["ks"] * len(categories),
    }
    return timeline({"a": series})


DRIFT = parse_monitors({"monitor": [{"columns": ["a"], "metric": "drift"}]})
POSSIBLE = parse_monitors({"monitor": [{"columns": ["a"], "metric": "drift", "fail_on": "possible_drift"}]})
PREVIOUS = parse_monitors({"monitor": [{"columns": ["a"], "metric": "drift", "against": "previous"}]})


@pytest.mark.parametrize(
    ("category", "on_drift", "on_possible"),
    [("DRIFT", True, True), ("POSSIBLE_DRIFT", False, True), ("NO_DRIFT", False, False), (None, False, False)],
)
def test_fail_on_drift_takes_drift_only_and_possible_drift_takes_both(category, on_drift, on_possible):
    document = drift_doc([category])
    assert bool(evaluate(DRIFT, document)) is on_drift
    assert bool(evaluate(POSSIBLE, document)) is on_possible


def test_a_drift_failure_says_against_what_with_which_test_and_p_value():
    (failure,) = evaluate(DRIFT, drift_doc(["DRIFT"], p=[6.8123e-57]))
    assert failure == Failure(
        monitor="drift vs reference",
        column="a",
        metric="drift",
        bucket_start=T0,
        bucket_end=T0 + DAY,
        value="DRIFT",
        reason="DRIFT against the reference (ks, p = 6.81e-57)",
    )
    document = drift_doc(["POSSIBLE_DRIFT"], p=[None])
    document["columns"]["a"]["drift_algorithm"] = [None]
    (failure,) = evaluate(POSSIBLE, document)
    assert failure.reason == "POSSIBLE_DRIFT against the reference (drift, no p-value)"


def test_against_previous_reads_the_previous_bucket_series():
    document = drift_doc(["NO_DRIFT", "NO_DRIFT"])
    document["columns"]["a"].update(
        previous_drift_category=[None, "DRIFT"],
        previous_drift_p_value=[None, 0.001],
        previous_drift_algorithm=[None, "chi-square"],
    )
    assert evaluate(DRIFT, document, "all") == []
    (failure,) = evaluate(PREVIOUS, document, "all")
    assert (failure.bucket_start, failure.monitor) == (T0 + DAY, "drift vs previous")
    assert failure.reason == "DRIFT against the previous bucket (chi-square, p = 0.001)"
    reference_only = drift_doc(["DRIFT", "DRIFT"])
    assert evaluate(PREVIOUS, reference_only, "all") == []


# -- which buckets, which columns --------------------------------------------------------------------


def test_latest_judges_the_last_bucket_only_and_all_judges_every_bucket():
    document = timeline({"a": {"count": [1, 50, 2, 60]}})
    monitors = one("count", max=10)
    assert [f.bucket_start for f in evaluate(monitors, document)] == [T0 + 3 * DAY]
    assert [f.bucket_start for f in evaluate(monitors, document, "latest")] == [T0 + 3 * DAY]
    assert [f.bucket_start for f in evaluate(monitors, document, "all")] == [T0 + DAY, T0 + 3 * DAY]
    passing_last = timeline({"a": {"count": [50, 1]}})
    assert evaluate(monitors, passing_last) == []
    assert [f.bucket_end for f in evaluate(monitors, passing_last, "all")] == [T0 + DAY]


def test_a_timeline_without_buckets_has_no_failures():
    empty = {"buckets": [], "columns": {"a": {"count": []}}}
    assert evaluate(one("count", max=0), empty) == []
    assert evaluate(one("count", max=0), empty, "all") == []
    assert evaluate(one("count", max=0, columns=["*"]), {"columns": {}}, "all") == []


def test_the_star_takes_every_column_and_names_take_their_own():
    document = timeline({"a": {"count": [50]}, "b": {"count": [50]}, "c": {"count": [1]}})
    assert [f.column for f in evaluate(one("count", max=10, columns=["*"]), document)] == ["a", "b"]
    assert [f.column for f in evaluate(one("count", max=10, columns=["b", "c"]), document)] == ["b"]
    assert [f.column for f in evaluate(one("count", max=10, columns=["*", "a"]), document)] == ["a", "b"]


def test_failures_come_by_bucket_then_monitor_then_column():
    monitors = parse_monitors(
        {
            "monitor": [
                {"columns": ["b", "a"], "metric": "count", "max": 10},
                {"columns": ["a"], "metric": "mean", "min": 0},
            ]
        }
    )
    document = timeline({"a": {"count": [50, 50], "mean": [-1, -1]}, "b": {"count": [50, 50]}})
    found = [(f.bucket_start, f.metric, f.column) for f in evaluate(monitors, document, "all")]
    assert found == [
        (T0, "count", "b"),
        (T0, "count", "a"),
        (T0, "mean", "a"),
        (T0 + DAY, "count", "b"),
        (T0 + DAY, "count", "a"),
        (T0 + DAY, "mean", "a"),
    ]


def test_a_column_the_session_never_had_is_an_error_naming_the_columns():
    document = timeline({"score": {"count": [1]}, "age": {"count": [1]}})
    monitors = parse_monitors(
        {"monitor": [{"columns": ["*"], "metric": "drift"}, {"columns": ["age", "scroe"], "metric": "mean", "max": 1}]}
    )
    with pytest.raises(MonitorsError) as caught:
        evaluate(monitors, document)
    assert str(caught.value) == "monitor 2 (mean <= 1): unknown column 'scroe'; the session's columns: score, age"
    with pytest.raises(MonitorsError) as caught:
        evaluate(one("count", max=1, columns=["x"]), {"buckets": [], "columns": {}})
    assert str(caught.value) == "monitor 1 (count <= 1): unknown column 'x'; the session's columns: none"


def test_the_column_list_of_the_error_stops_at_fifty():
    names = [f"c{i:02d}" for i in range(51)]
    with pytest.raises(MonitorsError) as caught:
        evaluate(one("count", max=1, columns=["nope"]), timeline({n: {"count": [1]} for n in names}))
    assert str(caught.value).endswith("the session's columns: " + ", ".join(names[:50]) + " …")
    with pytest.raises(MonitorsError) as caught:
        evaluate(one("count", max=1, columns=["nope"]), timeline({n: {"count": [1]} for n in names[:50]}))
    assert str(caught.value).endswith("the session's columns: " + ", ".join(names[:50]))


# -- property: just inside a threshold passes, just outside fails ---------------------------------

thresholds = st.floats(min_value=-1e12, max_value=1e12, allow_nan=False, allow_infinity=False)


@given(metric=st.sampled_from(THRESHOLD_METRICS), threshold=thresholds, inside=st.floats(0, 1e6))
def test_property_max_passes_at_or_below_and_fails_just_above(metric, threshold, inside):
    monitors = one(metric, max=threshold)
    below = threshold - inside
    just_above = math.nextafter(threshold, math.inf)
    document = timeline({"a": {metric: [threshold, below, just_above]}})
    assert [f.value for f in evaluate(monitors, document, "all")] == [just_above]


@given(metric=st.sampled_from(THRESHOLD_METRICS), threshold=thresholds, inside=st.floats(0, 1e6))
def test_property_min_passes_at_or_above_and_fails_just_below(metric, threshold, inside):
    monitors = one(metric, min=threshold)
    above = threshold + inside
    just_below = math.nextafter(threshold, -math.inf)
    document = timeline({"a": {metric: [threshold, above, just_below]}})
    assert [f.value for f in evaluate(monitors, document, "all")] == [just_below]


@given(low=thresholds, width=st.floats(0, 1e6), data=st.data())
def test_property_a_value_between_min_and_max_passes_and_outside_fails(low, width, data):
    high = low + width
    monitors = one("p50", min=low, max=high)
    value = data.draw(st.floats(low, high))
    outside = data.draw(st.sampled_from([math.nextafter(low, -math.inf), math.nextafter(high, math.inf)]))
    document = timeline({"a": {"p50": [value, outside]}})
    assert [f.value for f in evaluate(monitors, document, "all")] == [outside]


def test_a_file_applies_to_the_sessions_and_datasets_it_names_or_to_all():
    every = loads_monitors(MONITOR + 'metric = "drift"\n')
    assert every.applies_to("session", "session-a") and every.applies_to("dataset", "org-1/model-1")
    named = loads_monitors('datasets = "org-1/model-1"\n' + MONITOR + 'metric = "drift"\n')
    assert named.datasets == ("org-1/model-1",)
    assert named.applies_to("dataset", "org-1/model-1")
    assert not named.applies_to("dataset", "org-2/model-1") and not named.applies_to("session", "session-a")
    sessions = loads_monitors('sessions = ["session-a"]\n' + MONITOR + 'metric = "drift"\n')
    assert sessions.applies_to_session("session-a") and not sessions.applies_to_session("session-b")
    assert not sessions.applies_to("dataset", "org-1/model-1"), "a file naming sessions leaves datasets alone"


# -- [[notify]] tables, sessions, and where a mistake is ------------------------------------------

NOTIFY = '[[notify]]\nurl = "http://127.0.0.1:9/hook"\n'
COUNT = MONITOR + 'metric = "count"\nmax = 1\n'


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            COUNT + NOTIFY + 'format = "xml"\n',
            'm.toml: [[notify]] table 1, format: unknown format \'xml\'; give "json" or "slack"',
        ),
        (
            COUNT + NOTIFY + 'on = ["failed", "later"]\n',
            'm.toml: [[notify]] table 1, on: unknown event \'later\'; on takes "failed" and/or "resolved"',
        ),
        (
            COUNT + NOTIFY + NOTIFY + "headers = 1\n",
            "m.toml: [[notify]] table 2: unknown key 'headers'; valid keys: url, email, format, secret_env, on",
        ),
        (
            COUNT + NOTIFY + '"a,b" = 1\n',
            "m.toml: [[notify]] table 1: unknown key 'a,b'; valid keys: url, email, format, secret_env, on",
        ),
        (
            COUNT + '"x, y" = 1\n',
            "m.toml: monitor 1: unknown key 'x, y'; valid keys: name, columns, metric, fail_on, against, min, max",
        ),
        (
            COUNT + NOTIFY + 'against = "x"\n',
            "m.toml: [[notify]] table 1: unknown key 'against'; valid keys: url, email, format, secret_env, on",
        ),
        (
            COUNT + 'format = "x"\n',
            "m.toml: monitor 1: unknown key 'format'; valid keys: name, columns, metric, fail_on, against, min, max",
        ),
        (
            COUNT + 'on = "x"\n',
            "m.toml: monitor 1: unknown key 'on'; valid keys: name, columns, metric, fail_on, against, min, max",
        ),
        (
            COUNT + "[[notify]]\n",
            "m.toml: [[notify]] table 1: give url (a webhook) or email (addresses), exactly one of them",
        ),
        ('sessions = ["s", 2]\n' + COUNT, "m.toml: sessions.1: Input should be a valid string"),
        ("sessions = 5\n" + COUNT, "m.toml: sessions: Input should be a valid tuple"),
        ("reference = 5\n" + COUNT, "m.toml: reference: Input should be a valid string"),
        (
            "notify = [1]\n" + COUNT,
            "m.toml: [[notify]] table 1: Input should be a valid dictionary or instance of NotifyTarget",
        ),
        (
            '[[monitor]]\ncolumns = 5\nmetric = "count"\nmax = 1\n',
            "m.toml: monitor 1, columns: Input should be a valid tuple",
        ),
        (
            "colour = 1\n" + COUNT + NOTIFY + "x = 2\n",
            "m.toml: [[notify]] table 1: unknown key 'x'; valid keys: url, email, format, secret_env, on; "
            "unknown top-level key 'colour'; valid keys: reference, granularity, segment, sessions, "
            "datasets, [[monitor]], [[notify]]",
        ),
    ],
)
def test_notify_and_top_level_mistakes_say_where_and_what_to_fix(text, message):
    assert bad(text) == message


def test_a_mistake_with_no_location_is_the_file_s_and_one_without_message_is_invalid():
    assert _explain({"loc": (), "type": "value_error", "msg": "Value error, two things clash"}) == (
        "the file: two things clash"
    )
    assert _explain({"type": "value_error"}) == "the file: invalid"
    assert _explain({"loc": ("a", "b", 1), "type": "x", "msg": "m"}) == "a.b.1: m"
    assert _explain({"loc": ("monitor", 0, "a", "b"), "type": "x", "msg": "m"}) == "monitor 1, a.b: m"
    assert _explain({"loc": ("notify", 2, "a", 0, "b"), "type": "x", "msg": "m"}) == "[[notify]] table 3, a.b: m"
    assert _explain({"loc": ("monitor", "x"), "type": "x", "msg": "m"}) == "monitor.x: m"


def test_parsing_without_a_source_names_the_monitors_file():
    with pytest.raises(MonitorsError) as caught:
        parse_monitors({})
    assert str(caught.value) == "monitors file: no monitors; add at least one [[monitor]] table with columns and metric"
    with pytest.raises(MonitorsError) as caught:
        loads_monitors("colour = 1\n")
    assert str(caught.value) == (
        "monitors file: unknown top-level key 'colour'; valid keys: reference, granularity, segment, sessions, "
        "datasets, [[monitor]], [[notify]]"
    )


def test_sessions_limit_where_the_server_evaluates_the_monitors():
    every = loads_monitors(COUNT)
    assert (every.sessions, every.applies_to_session("s-1"), every.applies_to_session(None)) == (None, True, True)
    some = loads_monitors('sessions = ["s-1", "s-2"]\n' + COUNT)
    assert [some.applies_to_session(s) for s in ("s-1", "s-2", "s-3", None)] == [True, True, False, False]
    assert loads_monitors('sessions = "s-1"\n' + COUNT).sessions == ("s-1",)


def test_a_notify_target_s_repr_shows_where_it_goes_not_the_secret_path():
    parsed = loads_monitors(
        COUNT + NOTIFY.replace("hook", "T0/secret-path") + 'on = ["failed", "resolved"]\nformat = "slack"\n'
    )
    assert repr(parsed.notify[0]) == "NotifyTarget('http://127.0.0.1:9/…', format='slack', on=['failed', 'resolved'])"
