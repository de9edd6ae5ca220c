"""The session page's list parameters as pure logic: reading and checking the query (each 400's
message), the links that page and sort, cursors, segment labels, bounded counts and shortened text.
No server: the HTTP behaviour of the same list is in test_session_page.py."""

from __future__ import annotations

import pytest

from whylogs_songbird.server.common import segment_label
from whylogs_songbird.server.observatory.base import PageError
from whylogs_songbird.server.observatory.listing import (
    ListParams,
    ProfileCounts,
    decode_cursor,
    encode_cursor,
    parse_segment_label,
    read_params,
    shortened,
)
from whylogs_songbird.server.storage.paging import ProfileQuery

# hang_bound: a broken loop ends a mutant's run after SONGBIRD_TEST_HANG_SECONDS, not at mutmut's timeout
pytestmark = [pytest.mark.mutation_fast("whylogs_songbird/server/observatory/listing.py"), pytest.mark.hang_bound]

BACK = {"session_id": "session-" + "S" * 24}
LOG_ID = "log-" + "A" * 24
REF_ID = "ref-" + "B" * 24
HOME = "/sessions/s"


def refused(query: dict[str, str]) -> PageError:
    with pytest.raises(PageError) as raised:
        read_params(BACK, query)
    error = raised.value
    assert (error.status, error.session_id, error.home) == (400, BACK["session_id"], None)
    return error


# -- read_params: what a good query becomes -------------------------------------------------------------


def test_no_parameters_read_as_the_first_page_by_upload_time_newest_first():
    params, query = read_params(BACK, {})
    assert params == ListParams("uploaded", "desc", "", "", "", 50, "", "")
    assert query == ProfileQuery("uploaded", True, 50, None, None, "", None, None)
    assert not params.filtered
    assert read_params(BACK, {name: "" for name in ("sort", "order", "kind", "segment", "q", "limit")}) == (
        params,
        query,
    ), "an empty value is as if not given"


@pytest.mark.parametrize(
    ("given", "order", "descending"),
    [
        ({"sort": "timestamp"}, "desc", True),
        ({"sort": "alias"}, "asc", False),
        ({"sort": "alias", "order": "desc"}, "desc", True),
        ({"sort": "uploaded", "order": "asc"}, "asc", False),
        ({"sort": "timestamp", "order": "asc"}, "asc", False),
    ],
)
def test_each_sort_has_its_own_order_unless_one_is_given(given, order, descending):
    params, query = read_params(BACK, given)
    assert (params.sort, params.order) == (given["sort"], order)
    assert (query.sort, query.descending) == (given["sort"], descending)


def test_filters_are_carried_into_the_query():
    params, query = read_params(BACK, {"kind": "reference", "q": "Train", "segment": 'city="a=b,c",x=', "limit": "7"})
    assert params == ListParams("uploaded", "desc", "reference", 'city="a=b,c",x=', "Train", 7, "", "")
    assert params.filtered
    assert query == ProfileQuery("uploaded", True, 7, "reference", (("city", "a=b,c"), ("x", "")), "Train")
    assert read_params(BACK, {"kind": "batch"})[1].kind == "batch"


@pytest.mark.parametrize("what", [{"kind": "batch"}, {"segment": "a=b"}, {"q": "x"}])
def test_any_one_filter_makes_the_list_filtered(what):
    assert read_params(BACK, what)[0].filtered


@pytest.mark.parametrize(("raw", "limit"), [("1", 1), ("100", 100), ("0050", 50), ("99", 99)])
def test_page_sizes_from_1_to_100_are_taken(raw, limit):
    params, query = read_params(BACK, {"limit": raw})
    assert params.limit == query.limit == limit


def test_the_longest_filters_accepted_are_200_characters_of_alias_and_4096_of_segment():
    assert read_params(BACK, {"q": "x" * 200})[1].text == "x" * 200
    label = "k=" + "v" * 4094
    assert read_params(BACK, {"segment": label})[1].segment_tags == (("k", "v" * 4094),)


def test_a_page_link_reads_back_as_its_cursor_in_the_query():
    after = encode_cursor("timestamp", (5, LOG_ID))
    params, query = read_params(BACK, {"sort": "timestamp", "after": after})
    assert (params.after, params.before, query.after, query.before) == (after, "", (5, LOG_ID), None)
    before = encode_cursor("alias", ("reference", "gold", REF_ID))
    params, query = read_params(BACK, {"sort": "alias", "before": before})
    assert (params.after, params.before, query.after, query.before) == ("", before, None, ("reference", "gold", REF_ID))


# -- read_params: what is refused, and what the 400 says ------------------------------------------------

BAD = [
    (
        {"sort": "size"},
        "Unknown sort",
        "sort='size' is not an order of this list: give sort=uploaded, sort=timestamp or sort=alias.",
    ),
    ({"order": "up"}, "Unknown order", "order='up' is not an order: give order=asc or order=desc."),
    (
        {"kind": "profile"},
        "Unknown kind",
        "kind='profile' is not a kind of profile: give kind=batch or kind=reference (or none for both).",
    ),
    ({"limit": "0"}, "Bad page size", "limit='0' is not a page size: give a whole number of rows from 1 to 100."),
    ({"limit": "101"}, "Bad page size", "limit='101' is not a page size: give a whole number of rows from 1 to 100."),
    ({"limit": "ten"}, "Bad page size", "limit='ten' is not a page size: give a whole number of rows from 1 to 100."),
    ({"limit": "-5"}, "Bad page size", "limit='-5' is not a page size: give a whole number of rows from 1 to 100."),
    (
        {"limit": "00050"},
        "Bad page size",
        "limit='00050' is not a page size: give a whole number of rows from 1 to 100.",
    ),
    (
        {"limit": "\u0665"},
        "Bad page size",
        "limit='\u0665' is not a page size: give a whole number of rows from 1 to 100.",
    ),
    ({"q": "x" * 201}, "Alias filter too long", "The alias filter q is 201 characters; give at most 200."),
    ({"q": "x" * 1234}, "Alias filter too long", "The alias filter q is 1,234 characters; give at most 200."),
    (
        {"segment": "city"},
        "Bad segment filter",
        "segment='city' is not a segment label: give key=value pairs joined by commas, as the list shows them "
        '(a key or value holding , = " or \\ is quoted), at most 4,096 characters.',
    ),
    (
        {"after": "abc", "before": "abc"},
        "Bad page link",
        "The link gives both after= and before=: give one of them, or neither for the first page.",
    ),
    (
        {"after": "bm9wZQ"},
        "Bad page link",
        "after='bm9wZQ' is not a position in this list sorted by uploaded: follow the list's own Previous/Next "
        "links, or open its first page.",
    ),
    (
        {"before": "%%%", "sort": "alias"},
        "Bad page link",
        "before='%%%' is not a position in this list sorted by alias: follow the list's own Previous/Next "
        "links, or open its first page.",
    ),
]


@pytest.mark.parametrize(("query", "title", "message"), BAD)
def test_a_bad_parameter_is_a_400_saying_what_to_give(query, title, message):
    error = refused(query)
    assert (error.title, error.message) == (title, message)


def test_a_segment_label_too_long_is_refused_even_when_well_formed():
    error = refused({"segment": "k=" + "v" * 4095})
    assert error.title == "Bad segment filter"
    assert error.message.startswith("segment='k=" + "v" * 78 + "…' is not a segment label")


def test_a_long_bad_value_is_shortened_in_the_message():
    assert refused({"sort": "z" * 100}).message.startswith("sort='" + "z" * 80 + "…' is not an order")


def test_a_cursor_of_another_order_is_refused():
    token = encode_cursor("uploaded", (5, LOG_ID))
    assert read_params(BACK, {"after": token})[1].after == (5, LOG_ID)
    error = refused({"sort": "timestamp", "after": token})
    assert error.message.startswith(f"after={token!r} is not a position in this list sorted by timestamp")
    error = refused({"sort": "alias", "before": token})
    assert error.message.startswith(f"before={token!r} is not a position in this list sorted by alias")


def test_the_query_is_checked_in_order_sort_first():
    assert refused({"sort": "size", "order": "up", "kind": "x", "limit": "0"}).title == "Unknown sort"
    assert refused({"order": "up", "kind": "x", "limit": "0"}).title == "Unknown order"
    assert refused({"kind": "x", "limit": "0", "q": "x" * 300}).title == "Unknown kind"
    assert refused({"limit": "0", "q": "x" * 300}).title == "Bad page size"
    assert refused({"q": "x" * 300, "segment": "bad"}).title == "Alias filter too long"
    assert refused({"segment": "bad", "after": "a", "before": "b"}).title == "Bad segment filter"


# -- links ------------------------------------------------------------------------------------------------


def test_a_link_leaves_defaults_out_and_keeps_the_rest_in_a_fixed_order():
    assert ListParams().link(HOME) == HOME
    assert ListParams(sort="alias", order="asc").link(HOME) == HOME + "?sort=alias"
    assert ListParams(sort="timestamp", order="desc").link(HOME) == HOME + "?sort=timestamp"
    assert ListParams(order="asc").link(HOME) == HOME + "?order=asc"
    full = ListParams("alias", "desc", "batch", "a=b,c", "train 2024", 7, "AAA", "")
    wanted = "?sort=alias&order=desc&kind=batch&segment=a%3Db%2Cc&q=train+2024&limit=7&after=AAA"
    assert full.link(HOME) == HOME + wanted
    assert ListParams(before="BBB", after="AAA").link(HOME) == HOME + "?after=AAA&before=BBB"


def test_a_link_applies_its_changes_and_leaves_the_params_as_they_were():
    params = ListParams(kind="batch", limit=20, after="AAA")
    assert params.link(HOME, after="", before="ZZZ") == HOME + "?kind=batch&limit=20&before=ZZZ"
    assert params.link(HOME, segment="city=Paris", after="") == HOME + "?kind=batch&segment=city%3DParis&limit=20"
    assert params.link(HOME, limit=50, kind="") == HOME + "?after=AAA"
    assert params == ListParams(kind="batch", limit=20, after="AAA")


def test_sorting_by_the_current_sort_turns_it_round_and_another_starts_in_its_own_order():
    newest = ListParams(q="x", after="AAA", before="")
    assert newest.sorted_by(HOME, "uploaded") == HOME + "?order=asc&q=x"
    assert ListParams(order="asc", before="B").sorted_by(HOME, "uploaded") == HOME
    assert newest.sorted_by(HOME, "alias") == HOME + "?sort=alias&q=x"
    assert newest.sorted_by(HOME, "timestamp") == HOME + "?sort=timestamp&q=x"
    assert ListParams(sort="alias", order="asc").sorted_by(HOME, "alias") == HOME + "?sort=alias&order=desc"
    assert ListParams(sort="alias", order="desc").sorted_by(HOME, "timestamp") == HOME + "?sort=timestamp"


# -- cursors ----------------------------------------------------------------------------------------------


def test_a_cursor_token_is_unpadded_urlsafe_base64_of_its_json():
    assert encode_cursor("uploaded", (1, LOG_ID)) == "WyJ1cGxvYWRlZCIsMSwibG9nLUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQSJd"
    token = encode_cursor("alias", ("reference", "«ü»", REF_ID))
    assert "=" not in token and decode_cursor("alias", token) == ("reference", "«ü»", REF_ID)


@pytest.mark.parametrize("alias_chars", range(8))
def test_cursors_of_every_padding_read_back(alias_chars):
    cursor = ("reference", "a" * alias_chars, REF_ID)
    assert decode_cursor("alias", encode_cursor("alias", cursor)) == cursor


def test_a_cursor_token_of_up_to_2048_characters_is_read():
    def token_of(length: int) -> tuple[str, tuple[str, str, str]]:
        for n in range(3000):  # aliases of at most 1,024 characters, most of three bytes each
            cursor = ("batch", "€" * (n // 3) + "a" * (n % 3), LOG_ID)
            token = encode_cursor("alias", cursor)
            if len(token) == length:
                return token, cursor
        raise AssertionError(length)

    token, cursor = token_of(2048)
    assert decode_cursor("alias", token) == cursor
    token, cursor = token_of(2050)
    assert decode_cursor("alias", token) is None


@pytest.mark.parametrize(
    "token",
    [
        "",
        "é" + encode_cursor("uploaded", (1, LOG_ID)),
        "WyJ1cGxvYWRlZCJd",  # ["uploaded"]: no keys
        "W10",  # []
        "eyJhIjoxfQ",  # {"a":1}
        "bm9wZQ",  # nope: not JSON
        "A",  # not base64
        "!!!!",
    ],
)
def test_what_this_page_did_not_make_is_not_a_cursor(token):
    assert decode_cursor("uploaded", token) is None


# -- counts and shortened text ------------------------------------------------------------------------------


class CountingStore:
    """The one store call counts make: records the bound it was given."""

    def __init__(self, batch: int, reference: int) -> None:
        self.found = {"batch": batch, "reference": reference}
        self.asked: list[tuple[str, int]] = []

    def profile_counts(self, session_id: str, at_most: int) -> dict[str, int]:
        self.asked.append((session_id, at_most))
        return {kind: min(n, at_most) for kind, n in self.found.items()}


def test_counts_ask_the_store_for_one_past_the_bound():
    store = CountingStore(batch=12, reference=3)
    counts = ProfileCounts.of(store, "s1", bound=10)  # type: ignore[arg-type]
    assert store.asked == [("s1", 11)]
    assert counts == ProfileCounts(batch=11, reference=3, bound=10)
    assert (counts.more, counts.total, counts.shown("total"), counts.shown("batch")) == (
        True,
        13,
        "more than 13",
        "more than 10",
    )
    store = CountingStore(batch=2, reference=10)
    default = ProfileCounts.of(store, "s2")  # type: ignore[arg-type]
    assert store.asked == [("s2", 10_001)]
    assert (default.bound, default.more, default.shown("reference")) == (10_000, False, "10")


def test_counts_are_exact_up_to_the_bound_and_more_than_it_past():
    exact = ProfileCounts(batch=1234, reference=1, bound=10_000)
    assert (exact.more, exact.total) == (False, 1235)
    assert [exact.shown(what) for what in ("total", "batch", "reference")] == ["1,235", "1,234", "1"]
    at_bound = ProfileCounts(batch=10_000, reference=10_000, bound=10_000)
    assert (at_bound.more, at_bound.shown("total"), at_bound.shown("batch")) == (False, "20,000", "10,000")
    past = ProfileCounts(batch=3, reference=10_001, bound=10_000)
    assert (past.more, past.total) == (True, 10_003)
    assert [past.shown(what) for what in ("total", "batch", "reference")] == [
        "more than 10,003",
        "3",
        "more than 10,000",
    ]
    batches_past = ProfileCounts(batch=10_001, reference=2)
    assert (batches_past.bound, batches_past.more, batches_past.total) == (10_000, True, 10_002)
    assert [batches_past.shown(what) for what in ("total", "batch", "reference")] == [
        "more than 10,002",
        "more than 10,000",
        "2",
    ]


def test_text_is_shortened_past_160_characters_with_an_ellipsis():
    assert shortened("x" * 160) == "x" * 160
    assert shortened("x" * 161) == "x" * 160 + "…"
    assert shortened("abcdef", limit=3) == "abc…"
    assert shortened("abc", limit=3) == "abc"


# -- segment labels and cursors read back (moved from the HTTP tests' file) --------------------------------

LABELS = [
    [("city", "Paris")],
    [("city", "a=b,c"), ("k\\ey", 'say "hi"')],
    [("", ""), ("x", "")],
    [("東京", "São Paulo")],
    [("X", "aXb")],
]


@pytest.mark.parametrize("tags", LABELS)
def test_a_segment_label_reads_back_as_its_tags(tags):
    assert parse_segment_label(segment_label(tags)) == tuple(tags)


def test_a_segment_label_reads_by_hand():
    assert parse_segment_label('"a,b"="c\\"d",e=\\') is None
    assert parse_segment_label('"a,b"="c\\"d",e=f') == (("a,b", 'c"d'), ("e", "f"))
    assert parse_segment_label('k="\\\\"') == (("k", "\\"),)


NOT_LABELS = [
    "city",
    "city=Paris,",
    'city="Paris',
    'city="a\\x"',
    'city="a\\X"',
    'city="a\\',
    "a=b=c",
    "a=b=c=d",
    'a"=b',
    "=,",
    "a=b c=d",
    "",
    'a="b"c',
]


@pytest.mark.parametrize("label", NOT_LABELS)
def test_what_is_not_a_segment_label_is_refused(label):
    assert parse_segment_label(label) is None


def test_a_cursor_reads_back_only_in_its_own_order():
    for sort, cursor in (
        ("uploaded", (1_700_000_000_000, LOG_ID)),
        ("timestamp", (-9223372036854775807, LOG_ID)),
        ("alias", ("reference", "train «2024»", "ref-" + "b" * 24)),
    ):
        token = encode_cursor(sort, cursor)
        assert decode_cursor(sort, token) == cursor
        assert all(decode_cursor(other, token) is None for other in ("uploaded", "timestamp", "alias") if other != sort)
    assert decode_cursor("uploaded", encode_cursor("uploaded", (True, LOG_ID))) is None
    assert decode_cursor("uploaded", encode_cursor("uploaded", (1, "session-" + "A" * 24))) is None
    assert decode_cursor("alias", encode_cursor("alias", ("other", "", LOG_ID))) is None
    assert decode_cursor("uploaded", "!!") is None and decode_cursor("uploaded", "x" * 3000) is None
