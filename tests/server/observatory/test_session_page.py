"""HTTP tests of the session page's list: pages by keyset in each order and under filters, walked
with their own Next/Previous links while uploads arrive, bounded pages, bad parameters; and a
comparison with a profile still being summarised (202 as a whole). Real servers on loopback, on
the embedded store and on PostgreSQL + S3."""

from __future__ import annotations

import html
import re

import pytest
import requests
from conftest import STORAGE_NAMES, make_profile_bytes, make_store_config
from stored_profiles import wait_recorded

from whylogs_songbird.server import LocalServer, Store
from whylogs_songbird.server.common import observatory_link, segment_label
from whylogs_songbird.server.ingest import LEASE_MS
from whylogs_songbird.server.observatory.cache import PAGE_WAIT_SECONDS
from whylogs_songbird.server.store import blob_key, now_ms

TIMEOUT = 30
TS = 1_700_000_000_000
DAY = 86_400_000
PROFILE = make_profile_bytes(seed=1)


def upload(url: str, sid: str, timestamp: int | None, *, tags=(), alias: str | None = None) -> str:
    if alias is None:
        body = {"datasetTimestamp": timestamp, "segmentTags": [{"key": k, "value": v} for k, v in tags]}
        slot = requests.post(f"{url}/v0/sessions/{sid}/upload", json=body, timeout=TIMEOUT)
    else:
        slot = requests.post(f"{url}/v0/sessions/{sid}/reference", json={"alias": alias}, timeout=TIMEOUT)
    assert slot.ok, slot.text
    assert requests.put(slot.json()["uploadUrl"], data=PROFILE, timeout=TIMEOUT).ok
    return slot.json()["id"]


def rows(text: str) -> list[str]:
    return re.findall(r'<tr data-upload="([^"]+)"', text)


def link(text: str, rel: str) -> str | None:
    found = re.search(rf'<a rel="{rel}" href="([^"]+)"', text)
    return html.unescape(found.group(1)) if found else None


def get(url: str, path: str) -> requests.Response:
    return requests.get(url + path, timeout=TIMEOUT)


@pytest.fixture(scope="module", params=STORAGE_NAMES)
def site(request, tmp_path_factory, shared_sandbox):
    """A session of 20 profiles: 16 batches over 6 days (some sharing a timestamp, a third of them
    segmented) and 4 references with aliases."""
    root = tmp_path_factory.mktemp("session-page")
    with pytest.MonkeyPatch.context() as env:
        store = make_store_config(request.param, request, env)
        server = LocalServer(data_dir=root / "data", sandbox=shared_sandbox, **store).start()
    with server:
        sid = requests.post(f"{server.url}/v0/sessions", json={"userId": "pages"}, timeout=TIMEOUT).json()["id"]
        for i in range(16):
            tags = [("city", ("Paris", "a=b,c")[i % 2])] if i % 3 == 0 else []
            upload(server.url, sid, TS + (i // 3) * DAY, tags=tags)
        for alias in ("train 2024", "Holdout", "train 2023", "gold"):
            upload(server.url, sid, None, alias=alias)
        wait_recorded(server.store, sid)  # presigned PUTs: once the ingest worker saw them land
        yield {"server": server, "sid": sid, "kind": request.param}


ORDERS = [
    "",
    "?sort=timestamp",
    "?sort=timestamp&order=asc",
    "?sort=alias",
    "?sort=alias&order=desc",
    "?kind=batch&sort=timestamp",
    "?segment=city%3DParis",
    "?q=TRAIN&sort=alias",
]


@pytest.mark.parametrize("params", ORDERS)
def test_pages_walk_each_profile_once_in_order_while_uploads_arrive(site, params):
    server, sid = site["server"], site["sid"]
    path = f"/sessions/{sid}{params}"
    whole = get(server.url, path + ("&" if "?" in path else "?") + "limit=100")
    assert whole.status_code == 200, whole.text[:300]
    order = rows(whole.text)
    assert order and len(order) == len(set(order))
    seen: list[str] = []
    page = get(server.url, path + ("&" if "?" in path else "?") + "limit=3")
    pages: list[list[str]] = []
    while True:
        assert page.status_code == 200
        ids = rows(page.text)
        assert 0 < len(ids) <= 3
        pages.append(ids)
        seen += ids
        upload(server.url, sid, TS + 2 * DAY, tags=[("city", "Paris")])  # arrives while someone pages
        following = link(page.text, "next")
        if following is None:
            break
        page = get(server.url, following)
    assert len(seen) == len(set(seen)), "a profile was shown twice"
    assert [i for i in seen if i in order] == order, "every profile there at the start, once, in order"
    # and back again with Previous, page by page, to the first (which has no Previous; it is full,
    # so it may repeat rows of the page after it)
    back = pages[-1]
    for _ in range(len(pages)):
        previous = link(page.text, "prev")
        if previous is None:
            break
        page = get(server.url, previous)
        back = rows(page.text) + back
    assert link(page.text, "prev") is None
    assert [i for i in dict.fromkeys(back) if i in order] == order


def test_filters_pick_their_profiles_and_the_counts_are_the_sessions(site):
    server, sid = site["server"], site["sid"]
    profiles = server.store.list_profiles(sid)
    page = get(server.url, f"/sessions/{sid}?kind=reference")
    assert set(rows(page.text)) == {p.id for p in profiles if p.kind == "reference"}
    total = int(re.search(r'id="profile-count" data-total="(\d+)"', page.text).group(1))
    assert total == len(profiles), "the count is of the whole session, whatever the filter"
    page = get(server.url, f"/sessions/{sid}?q=train")
    assert set(rows(page.text)) == {p.id for p in profiles if p.alias and "train" in p.alias}
    # a segment's tag is a link that filters by it (quoted parts too), no JavaScript needed
    label = segment_label([("city", "a=b,c")])
    page = get(server.url, f"/sessions/{sid}?sort=alias")
    filters = [html.unescape(u) for u in re.findall(r'<a class="tag segment-filter" href="([^"]+)"', page.text)]
    chosen = [u for u in filters if "a%3Db%2Cc" in u.replace("%22", "")]
    assert chosen
    page = get(server.url, chosen[0])
    assert page.status_code == 200
    assert set(rows(page.text)) == {p.id for p in profiles if segment_label(p.segment_tags) == label}
    assert html.unescape(re.search(r'name="segment" value="([^"]*)"', page.text).group(1)) == label
    # the list's form submits by GET to this page: its fields are the parameters
    form = re.search(r'<form id="list-form"[^>]*>(.*?)</form>', page.text, re.S)
    assert form and 'method="get"' in form.group(0)
    assert set(re.findall(r'name="([a-z]+)"', form.group(1))) == {"sort", "order", "kind", "segment", "q", "limit"}
    assert 'id="open-selected" class="button">' in page.text, "the picker's button works without JavaScript"
    nothing = get(server.url, f"/sessions/{sid}?q=nothing-like-this")
    assert nothing.status_code == 200 and rows(nothing.text) == [] and 'id="no-match"' in nothing.text


def test_a_page_holds_at_most_its_limit(site):
    server, sid = site["server"], site["sid"]
    first = get(server.url, f"/sessions/{sid}")
    assert len(rows(first.text)) == min(50, len(server.store.list_profiles(sid)))
    for limit in (1, 7, 100):
        page = get(server.url, f"/sessions/{sid}?limit={limit}")
        assert page.status_code == 200 and 0 < len(rows(page.text)) <= limit
        assert (link(page.text, "next") is not None) == (len(server.store.list_profiles(sid)) > limit)


BAD = [
    ("sort=size", "sort='size' is not an order of this list: give sort=uploaded, sort=timestamp or sort=alias."),
    ("order=up", "order='up' is not an order: give order=asc or order=desc."),
    ("kind=profile", "kind='profile' is not a kind of profile"),
    ("limit=0", "limit='0' is not a page size: give a whole number of rows from 1 to 100."),
    ("limit=101", "limit='101' is not a page size"),
    ("limit=ten", "limit='ten' is not a page size"),
    ("after=bm9wZQ", "after='bm9wZQ' is not a position in this list sorted by uploaded"),
    ("before=%%%", "before='%%%' is not a position in this list"),
    ("after=abc&before=abc", "The link gives both after= and before="),
    ('segment=city="Paris', "is not a segment label: give key=value pairs joined by commas"),
    ("segment=city", "segment='city' is not a segment label"),
    ("q=" + "x" * 201, "The alias filter q is 201 characters; give at most 200."),
]


@pytest.mark.parametrize(("query", "message"), BAD)
def test_bad_list_parameters_answer_400_saying_what_to_give(site, query, message):
    if site["kind"] != "embedded":
        pytest.skip("the parameters are read before the store is: once is enough")
    server, sid = site["server"], site["sid"]
    page = get(server.url, f"/sessions/{sid}?{query}")
    assert page.status_code == 400
    shown = html.unescape(re.search(r'<p id="error-message">(.*?)</p>', page.text, re.S).group(1))
    assert message in re.sub(r"</?bdi>", "", shown)


def test_a_cursor_of_another_order_is_refused(site):
    if site["kind"] != "embedded":
        pytest.skip("read before the store is")
    server, sid = site["server"], site["sid"]
    following = link(get(server.url, f"/sessions/{sid}?limit=2").text, "next")
    assert following is not None and "after=" in following
    token = re.search(r"after=([^&]+)", following).group(1)
    page = get(server.url, f"/sessions/{sid}?sort=timestamp&after={token}")
    assert page.status_code == 400 and "is not a position in this list sorted by timestamp" in page.text


def test_a_comparison_with_a_profile_still_being_summarised_answers_202_as_a_whole(server, tmp_path):
    sid = requests.post(f"{server.url}/v0/sessions", json={"userId": "pending"}, timeout=TIMEOUT).json()["id"]
    upload(server.url, sid, TS)
    slot = requests.post(f"{server.url}/v0/sessions/{sid}/upload", json={"datasetTimestamp": TS + DAY}, timeout=30)
    pending_id = slot.json()["id"]
    # another process records the second profile and holds the claim on its summary, both a second
    # older than PAGE_WAIT_SECONDS (a page waits for another process's claim only on a younger
    # profile: it answers at once, whatever a slow run's timing): its bytes first, then its row
    other = Store(server.data_dir)
    try:
        import hashlib

        digest = hashlib.sha256(PROFILE).hexdigest()
        key = blob_key(sid, pending_id, digest)
        other.blobs.put_bytes(key, PROFILE)
        claimed = now_ms() - int(PAGE_WAIT_SECONDS * 1000) - 1000
        with other.metadata._transaction() as conn:
            other.metadata._exec(
                conn,
                "UPDATE uploads SET stored_at = ?, size = ?, sha256 = ?, path = ?, ingest_state = 'pending',"
                " ingest_lease = ?, ingest_tries = 1, ingest_owner = 'another-host' WHERE id = ?",
                (claimed, len(PROFILE), digest, key, claimed + LEASE_MS, pending_id),
            )
        url = observatory_link(server.url, sid, [str(TS), str(TS + DAY)])
        page = requests.get(url, timeout=TIMEOUT)
        assert page.status_code == 202
        assert page.headers["Retry-After"] == "2"
        assert '<meta http-equiv="refresh" content="2">' in page.text
        assert str(TS + DAY) in page.text and "still being summarised" in page.text
        assert 'class="profile-card"' not in page.text and 'class="column-card"' not in page.text, "nothing in part"
        alone = requests.get(observatory_link(server.url, sid, [str(TS)]), timeout=TIMEOUT)
        assert alone.status_code == 200 and "Retry-After" not in alone.headers
        # once the claim is given up (its holder died), the page summarises it and shows all
        with other.metadata._transaction() as conn:
            other.metadata._exec(conn, "UPDATE uploads SET ingest_lease = NULL WHERE id = ?", (pending_id,))
        page = requests.get(url, timeout=TIMEOUT)
        assert page.status_code == 200 and page.text.count('class="profile-card"') == 2
    finally:
        other.close()


def test_a_session_past_the_counted_bound_says_more_than_it(server_factory):
    from whylogs_songbird.server.observatory.listing import COUNTED_PROFILES
    from whylogs_songbird.server.storage.base import new_id

    server = server_factory(list_sessions=True)
    sid = requests.post(f"{server.url}/v0/sessions", json={"userId": "many"}, timeout=TIMEOUT).json()["id"]
    now = now_ms()
    seeded = [
        (new_id("log"), sid, "batch", TS + i, None, now, now // 1000 + 3600, now + i)
        for i in range(COUNTED_PROFILES + 1)
    ] + [(new_id("ref"), sid, "reference", None, f"ref {i}", now, now // 1000 + 3600, now) for i in range(2)]
    metadata = server.store.metadata
    with metadata._transaction() as conn:  # stored rows straight into the database: no upload is read
        conn.executemany(
            "INSERT INTO uploads (id, session_id, kind, dataset_timestamp, alias, created_at, expires_at, stored_at,"
            " size, sha256, ingest_state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 3, 'x', 'ready')",
            seeded,
        )
    page = get(server.url, f"/sessions/{sid}")
    assert page.status_code == 200 and len(rows(page.text)) == 50
    lead = re.sub(r"<[^>]+>", "", re.search(r'<span id="profile-count".*?\)', page.text).group(0))
    assert lead == f"more than {COUNTED_PROFILES + 2:,} profiles (more than {COUNTED_PROFILES:,} batches, 2 references)"
    assert f'data-total="{COUNTED_PROFILES + 2}" data-more="true"' in page.text
    listed = re.search(rf'<tr data-session="{sid}">(.*?)</tr>', get(server.url, "/").text, re.S).group(1)
    assert re.findall(r'<td class="num">([^<]*)</td>', listed) == [f"more than {COUNTED_PROFILES:,}", "2"]
