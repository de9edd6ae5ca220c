"""From whylogs objects to upload items (pure logic on real whylogs profiles, no HTTP)."""

import time
from datetime import datetime, timezone

import pandas as pd
import pytest
import whylogs as why
from whylogs.core import DatasetProfile, DatasetProfileView
from whylogs.core.schema import DatasetSchema
from whylogs.core.segmentation_partition import segment_on_column

from whylogs_songbird.errors import ConfigError, ProfileError
from whylogs_songbird.profiles import check_alias, items_from, read_profile_file, reference_items, to_millis


@pytest.fixture
def df():
    return pd.DataFrame({"x": [1.0, 2.0, 3.0, None], "city": ["a", "b", "a", "c"]})


def counts(view: DatasetProfileView) -> dict:
    return {name: col.get_metric("counts").n.value for name, col in view.get_columns().items()}


def test_every_writable_type_gives_one_item(df):
    results = why.log(df)
    profile = results.profile()
    view = results.view()
    for obj in (results, profile, view):
        (item,) = items_from(obj)
        assert item.alias is None and item.segment_tags == ()
        back = DatasetProfileView.deserialize(item.serialize())
        assert counts(back)["x"] == 4 and counts(back)["city"] == 4


def test_segmented_result_set_gives_one_item_per_segment_with_tags(df):
    results = why.log(df, schema=DatasetSchema(segments=segment_on_column("city")))
    items = items_from(results)
    assert sorted(i.segment_label for i in items) == ["city=a", "city=b", "city=c"]
    assert len({i.dataset_timestamp for i in items}) == 1, "segments of one batch share a timestamp"
    by_label = {i.segment_label: DatasetProfileView.deserialize(i.serialize()) for i in items}
    assert counts(by_label["city=a"])["x"] == 2


def test_segmented_reference_aliases(df):
    results = why.log(df, schema=DatasetSchema(segments=segment_on_column("city")))
    aliases = sorted(i.alias for i in items_from(results, reference_profile_name="train"))
    assert aliases == ["train[city=a]", "train[city=b]", "train[city=c]"]


def test_dataset_timestamp_from_profile_or_override_or_now(df):
    when = datetime(2024, 5, 1, tzinfo=timezone.utc)
    results = why.log(df)
    results.set_dataset_timestamp(when)
    assert items_from(results)[0].dataset_timestamp == int(when.timestamp() * 1000)
    assert items_from(results, dataset_timestamp=1714608000000)[0].dataset_timestamp == 1714608000000
    view = results.view()
    bare = DatasetProfileView(columns=view.get_columns(), dataset_timestamp=None, creation_timestamp=None)
    before = int(time.time() * 1000)
    assert items_from(bare)[0].dataset_timestamp >= before


def test_timestamps_in_seconds_or_out_of_range_are_refused():
    with pytest.raises(ConfigError, match="looks like epoch seconds.*1714608000000"):
        to_millis(1714608000)
    with pytest.raises(ConfigError, match="before 1970"):
        to_millis(-5)
    with pytest.raises(ConfigError, match="before 1970"):
        to_millis(datetime(1960, 1, 1, tzinfo=timezone.utc))
    with pytest.raises(ConfigError, match="future"):
        to_millis(int(time.time() * 1000) + 10 * 365 * 24 * 3600 * 1000)
    with pytest.raises(ConfigError, match="datetime or epoch milliseconds"):
        to_millis("yesterday")  # type: ignore[arg-type]
    for odd in (float("nan"), float("inf"), float("-inf")):
        with pytest.raises(ConfigError, match="finite"):
            to_millis(odd)
    naive = datetime(2024, 5, 1)
    assert to_millis(naive) == int(datetime(2024, 5, 1, tzinfo=timezone.utc).timestamp() * 1000)


@pytest.mark.parametrize("alias", ["", "   ", "x" * 1000, "bad\nname", None, 5])
def test_bad_aliases(alias):
    with pytest.raises(ConfigError):
        check_alias(alias)


@pytest.mark.parametrize("alias", ["train", "données d'entraînement", "a&b/c?d#e", "x" * 256])
def test_good_aliases(alias):
    assert check_alias(alias) == alias


def test_not_a_writable_and_empty_profiles_are_profile_errors(df):
    with pytest.raises(ProfileError, match="Cannot publish a DataFrame"):
        items_from(df)
    with pytest.raises(ProfileError, match="no columns"):
        items_from(DatasetProfile())
    with pytest.raises(ProfileError, match="empty"):
        items_from(why.log(pd.DataFrame({"x": pd.Series([], dtype=float)})))


def test_profile_files(tmp_path, df):
    path = tmp_path / "p.bin"
    path.write_bytes(why.log(df).view().serialize())
    assert counts(read_profile_file(path))["x"] == 4
    assert items_from(path)[0].serialize()
    with pytest.raises(ProfileError, match="no such file"):
        read_profile_file(tmp_path / "missing.bin")
    (tmp_path / "junk.bin").write_bytes(b"not a profile at all")
    with pytest.raises(ProfileError, match="not a serialized whylogs profile"):
        read_profile_file(tmp_path / "junk.bin")
    with pytest.raises(ProfileError, match="directory"):
        read_profile_file(tmp_path)


def test_reference_names_must_be_unique(df):
    with pytest.raises(ConfigError, match="given twice"):
        reference_items([("a", why.log(df)), ("a", why.log(df))])


def test_serialized_once(df):
    (item,) = items_from(why.log(df))
    assert item.serialize() is item.serialize()


def test_bytes_are_exactly_what_whylogs_serializes(df):
    (item,) = items_from(why.log(df))
    assert item.serialize() == item.view.serialize()
    assert DatasetProfileView.deserialize(item.serialize()).get_columns().keys() == {"x", "city"}
