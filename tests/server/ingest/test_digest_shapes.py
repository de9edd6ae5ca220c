"""The fast digest takes a column from its messages only when its metrics are exactly whylogs'
defaults (each component there, none more, each of its kind and type id); any other column is
left to whylogs' own deserializer (``digest._NotDefaultShape``)."""

from __future__ import annotations

import pytest
from conftest import make_profile_bytes
from whylogs.core import DatasetProfileView
from whylogs.core.proto import MetricComponentMessage

from whylogs_songbird.server import digest

pytestmark = pytest.mark.mutation_fast("whylogs_songbird/server/digest.py")


def components(column: str) -> dict[str, MetricComponentMessage]:
    """The component messages of one column of a small profile of whylogs' default metrics."""
    view = DatasetProfileView.deserialize(make_profile_bytes(5, seed=3))
    return dict(view.get_column(column).to_protobuf().metric_components)


def test_a_column_of_the_default_metrics_is_digested_from_its_messages():
    found = digest._default_column(components("n"))
    assert found["counts"] == [5, 0, 0, 0, 0]  # n, null, nan, inf, true
    assert found["types"] == [5, 0, 0, 0, 0, 0]  # integral, fractional, boolean, string, object, tensor
    assert sorted(found) == ["cardinality", "counts", "distribution", "frequent_items", "types"]


def test_a_missing_component_is_not_the_default_shape():
    found = components("x")
    del found["counts/nan"]
    with pytest.raises(digest._NotDefaultShape):
        digest._default_column(found)


@pytest.mark.parametrize("path", ["counts/extra", "custom/value", "counts"])
def test_an_extra_component_is_not_the_default_shape(path):
    found = components("x")
    found[path] = MetricComponentMessage(n=1)
    with pytest.raises(digest._NotDefaultShape):
        digest._default_column(found)


def test_a_component_of_another_type_id_is_not_the_default_shape():
    found = components("x")
    found["counts/n"] = MetricComponentMessage(n=5, type_id=1)
    with pytest.raises(digest._NotDefaultShape):
        digest._default_column(found)


def test_a_component_with_another_kind_of_value_is_not_the_default_shape():
    found = components("x")
    found["distribution/mean"] = MetricComponentMessage(n=2)  # a mean is a double (d)
    with pytest.raises(digest._NotDefaultShape):
        digest._default_column(found)
