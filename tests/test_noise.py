"""What a newcomer sees that they did not cause (issue 22 item 6): whylogs' pandas FutureWarning per
segment is hidden, and only that warning, only around our calls."""

import warnings

import pandas as pd
import whylogs as why

from whylogs_songbird.engines import profile_frame, schema_for
from whylogs_songbird.profiles import segment_warning_silenced


def frame() -> pd.DataFrame:
    return pd.DataFrame({"region": ["north", "south", "north", "east"], "amount": [1.0, 2.0, 3.0, 4.0]})


def test_segmenting_shows_no_future_warning_and_leaves_the_filters_alone():
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pieces = profile_frame(frame(), ["region"])
    assert sorted(pieces) == [("east",), ("north",), ("south",)]
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
    assert warnings.filters == before, "the user's warning filters are as they were"


def test_only_that_warning_is_hidden():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with segment_warning_silenced():
            why.log(frame(), schema=schema_for(["region"]))
            warnings.warn("When grouping with a length-1 list-like, in our own code", FutureWarning, stacklevel=1)
            warnings.warn("something else", FutureWarning, stacklevel=1)
    said = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert said == ["When grouping with a length-1 list-like, in our own code", "something else"]
