"""What a sandbox child does with a profile (whylogs_songbird/server/sandbox.py), in this process:
which digest path it takes, and what it asks of the sketch library for each sketch of the digest
(the library's classes are wrapped to record the calls, which still reach the real library).
"""

from __future__ import annotations

import logging
from typing import Any, NoReturn

import pandas as pd
import pytest
import whylogs as why
import whylogs_sketching as ds
from conftest import make_profile_bytes

from whylogs_songbird.server import digest, sandbox
from whylogs_songbird.server.summaries import read_view

# hang_bound: a broken worker or loop ends a mutant's run after SONGBIRD_TEST_HANG_SECONDS, not its deadline
pytestmark = [pytest.mark.mutation_fast("whylogs_songbird/server/sandbox.py"), pytest.mark.hang_bound]


class Traced:
    """A sketch-library class or object whose method calls are logged as (class.method, args)."""

    def __init__(self, target: Any, log: list[tuple[str, tuple[Any, ...]]]) -> None:
        self._target, self._log = target, log
        self._name = target.__name__ if isinstance(target, type) else type(target).__name__

    def _wrap(self, value: Any) -> Any:
        return Traced(value, self._log) if type(value).__module__ == "whylogs_sketching" else value

    def __call__(self, *args: Any) -> Any:
        plain = tuple(a._target if isinstance(a, Traced) else a for a in args)
        return self._wrap(self._target(*plain))

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._target, attr)
        if not callable(value):
            return value

        def call(*args: Any) -> Any:
            plain = tuple(a._target if isinstance(a, Traced) else a for a in args)
            self._log.append((f"{self._name}.{attr}", tuple(_shown(a) for a in plain)))
            return self._wrap(value(*plain))

        return call


def _shown(arg: Any) -> Any:
    """A sketch as its class name; anything else (numbers, lists, the library's enums) as it is."""
    name = type(arg).__name__
    return name if type(arg).__module__ == "whylogs_sketching" and ("sketch" in name or "union" in name) else arg


@pytest.fixture
def traced(monkeypatch: pytest.MonkeyPatch) -> Any:
    """traced(digest) -> the library calls exercise_digest(digest) makes."""

    def run(blob: bytes) -> list[tuple[str, tuple[Any, ...]]]:
        log: list[tuple[str, tuple[Any, ...]]] = []
        with monkeypatch.context() as patch:
            for name in ("kll_doubles_sketch", "hll_sketch", "hll_union", "frequent_strings_sketch"):
                patch.setattr(ds, name, Traced(getattr(ds, name), log))
            sandbox.exercise_digest(blob)
        return log

    return run


def digest_of(frame: pd.DataFrame) -> bytes:
    return digest.digest_view(why.log(frame).view())


def test_every_sketch_of_the_digest_is_rebuilt_and_queried_as_pages_will(traced):
    library_calls = traced(digest_of(pd.DataFrame({"x": [1.5, 4.0, 2.5], "s": ["a", "b", "a"]})))
    names = [name for name, _ in library_calls]
    assert ("kll_doubles_sketch.get_quantiles", ([0.0, 0.25, 0.5, 0.75, 1.0],)) in library_calls
    assert ("kll_doubles_sketch.get_cdf", ([1.5, 4.0],)) in library_calls
    assert ("kll_doubles_sketch.get_pmf", ([1.5, 4.0],)) in library_calls
    assert names.count("hll_union.update") == 4  # twice for each column
    assert ("hll_sketch.get_lower_bound", (1,)) in library_calls
    assert ("hll_sketch.get_upper_bound", (1,)) in library_calls
    assert names.count("hll_sketch.get_estimate") == 2
    no_false_negatives = ds.frequent_items_error_type.NO_FALSE_NEGATIVES
    no_false_positives = ds.frequent_items_error_type.NO_FALSE_POSITIVES
    asked = [args for name, args in library_calls if name == "frequent_strings_sketch.get_frequent_items"]
    assert asked == [(no_false_negatives,), (no_false_positives,)]
    # the estimate of the first row of each list only
    assert names.count("frequent_strings_sketch.get_estimate") == 2
    assert "frequent_strings_sketch.merge" in names and "kll_doubles_sketch.merge" in names


def test_a_constant_column_is_queried_at_its_one_value():
    """The library refuses split points that are not strictly increasing: a column of one value is
    asked about that value alone (the digest is fine, so this passes)."""
    sandbox.exercise_digest(digest_of(pd.DataFrame({"c": [5.0, 5.0, 5.0]})))


def test_a_constant_column_s_split_points(traced):
    library_calls = traced(digest_of(pd.DataFrame({"c": [5.0, 5.0]})))
    assert ("kll_doubles_sketch.get_cdf", ([5.0],)) in library_calls


def test_each_column_s_sketches_are_queried(traced):
    library_calls = traced(digest_of(pd.DataFrame({"a": [1.0, 2.0], "b": [7.0, 9.0]})))
    assert [args for name, args in library_calls if name == "kll_doubles_sketch.get_cdf"] == [
        ([1.0, 2.0],),
        ([7.0, 9.0],),
    ]
    assert [name for name, _ in library_calls].count("hll_sketch.get_estimate") == 2


def test_the_fast_digest_is_used_when_it_takes_the_bytes(caplog):
    data = make_profile_bytes(8)
    with caplog.at_level(logging.DEBUG, logger="whylogs_songbird.server.sandbox"):
        assert sandbox.summarise_bytes(data) == digest.digest_from_bytes(data)
    assert caplog.records == []


def _refusing(data: bytes):
    """A fast digest's stand-in that is given exactly ``data`` and refuses it."""

    def refuse(given: bytes) -> NoReturn:
        assert given == data
        raise ValueError("not a default shape")

    return refuse


def test_bytes_the_fast_digest_does_not_take_get_whylogs_verdict(caplog, monkeypatch):
    data = make_profile_bytes(8, seed=2)
    expected = digest.digest_view(read_view(data))
    monkeypatch.setattr(digest, "digest_from_bytes", _refusing(data))
    with caplog.at_level(logging.DEBUG, logger="whylogs_songbird.server.sandbox"):
        assert sandbox.summarise_bytes(data) == expected
    (record,) = caplog.records
    assert record.getMessage() == "sandbox: the fast digest did not take these bytes; asking whylogs"
    assert record.levelno == logging.DEBUG and record.exc_info is not None
    assert str(record.exc_info[1]) == "not a default shape"


def test_the_child_digests_through_the_fast_path_when_it_takes_the_bytes(caplog, monkeypatch):
    data = make_profile_bytes(8)
    expected = digest.digest_from_bytes(data)
    given: list[bytes] = []
    fast = digest.raw_columns_from_bytes
    monkeypatch.setattr(digest, "raw_columns_from_bytes", lambda raw: given.append(raw) or fast(raw))
    with caplog.at_level(logging.DEBUG, logger="whylogs_songbird.server.sandbox"):
        assert sandbox.summarise_in_child(data, 10) == expected
    assert given == [data] and caplog.records == []


def test_bytes_the_fast_path_does_not_take_are_digested_from_whylogs_reading_in_the_child(caplog, monkeypatch):
    data = make_profile_bytes(8, seed=2)
    expected = digest.digest_view(read_view(data))
    monkeypatch.setattr(digest, "raw_columns_from_bytes", _refusing(data))
    with caplog.at_level(logging.DEBUG, logger="whylogs_songbird.server.sandbox"):
        assert sandbox.summarise_in_child(data, 10, checked=True) == expected
    (record,) = caplog.records
    assert record.getMessage() == "sandbox: the fast digest did not take these bytes; asking whylogs"
    assert record.levelno == logging.DEBUG and record.exc_info is not None
    assert str(record.exc_info[1]) == "not a default shape"
