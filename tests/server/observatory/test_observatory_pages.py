"""HTTP tests of the observatory pages against a real local server on a loopback port."""

import os

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")  # before anything imports whylogs

import html  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from urllib.parse import parse_qs, urlsplit  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import requests  # noqa: E402
import whylogs as why  # noqa: E402
from conftest import STORAGE_NAMES, make_store_config  # noqa: E402
from pages import header_field
from stored_profiles import store_profile_bytes
from whylogs.core.schema import DatasetSchema  # noqa: E402
from whylogs.core.segmentation_partition import segment_on_column  # noqa: E402

import whylogs_songbird  # noqa: E402,F401  (registers the writer)
from whylogs_songbird.server import LocalServer, Store  # noqa: E402
from whylogs_songbird.server.observatory import (  # noqa: E402
    LruCache,
    PageError,
    ProfileCache,
    observatory_link,
    segment_label,
)
from whylogs_songbird.server.observatory.page import _json_for_script, _number  # noqa: E402
from whylogs_songbird.server.observatory.selection import parse_segments as _parse_segments  # noqa: E402
from whylogs_songbird.server.store import parse_timestamp_selector  # noqa: E402

TIMEOUT = 30
TS_REF = 1_700_000_000_000
TS_1 = 1_700_086_400_000
TS_2 = 1_700_172_800_000
SEGMENT_VALUES = ["São Paulo", "a&b/?#=,x", "東京"]


def frame(seed=0, n=600, shift=0.0, p=(0.5, 0.3, 0.2)):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 90, n),
            "income": rng.normal(50_000 + shift, 8_000, n),
            "score": np.where(rng.random(n) < 0.15, np.nan, rng.random(n)),
            "city": rng.choice(SEGMENT_VALUES, n, p=list(p)),
        }
    )


def write(server, config_dir, df, **options):
    return why.log(df).writer("songbird").option(endpoint=server.url, config_dir=str(config_dir), **options).write()


def get(url, **params):
    return requests.get(url, params=params or None, timeout=TIMEOUT)


def query(url):
    return parse_qs(urlsplit(url).query)


def page_url(server, profiles, session_id, segments=()):
    return observatory_link(server.url, session_id, [str(p) for p in profiles], list(segments))


# -- reading pages --------------------------------------------------------------------------


def card(text, column):
    """The HTML of one column's card."""
    match = re.search(
        r'<article class="column-card" id="col-\d+" data-column="' + re.escape(html.escape(column)) + r'".*?</article>',
        text,
        re.S,
    )
    assert match, f"no card for column {column!r}"
    return match.group(0)


def cell(card_html, stat, profile=1):
    """(data-value, shown text) of a statistic cell."""
    row = re.search(r'<tr data-stat="' + stat + r'"[^>]*>(.*?)</tr>', card_html, re.S)
    assert row, f"no {stat} row"
    td = re.search(
        r'<td data-profile="' + str(profile) + r'"(?: data-value="([^"]*)")?[^>]*>(.*?)</td>', row.group(1), re.S
    )
    assert td, f"no cell for profile {profile}"
    return html.unescape(td.group(1) or ""), html.unescape(re.sub(r"<[^>]+>", " ", td.group(2))).strip()


def error_message(response):
    match = re.search(r'<p id="error-message">(.*?)</p>', response.text, re.S)
    assert match, response.text[:500]
    return html.unescape(match.group(1))


def chart_payload(text):
    match = re.search(r'<script type="application/json" id="chart-data">(.*?)</script>', text, re.S)
    assert match
    return json.loads(match.group(1))


# -- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=STORAGE_NAMES)
def site(request, tmp_path_factory, shared_sandbox):
    """One server with a reference, two batches (the second drifted) and a segmented batch; once
    on the embedded store and once on PostgreSQL + S3 (SeaweedFS)."""
    root = tmp_path_factory.mktemp("observatory")
    with pytest.MonkeyPatch.context() as env:
        store = make_store_config(request.param, request, env)
        server = LocalServer(data_dir=root / "data", list_sessions=True, sandbox=shared_sandbox, **store).start()
    with server:
        cfg = root / "config"
        reference = whylogs_songbird.publish_references(
            {"training <b>set</b>": why.log(frame(seed=1))}, endpoint=server.url, config_dir=str(cfg)
        )
        ref_id = reference.profiles[0].profile_id
        session_id = reference.session_id
        ok1, url1 = write(server, cfg, frame(seed=2), dataset_timestamp=TS_1)
        ok2, url2 = write(server, cfg, frame(seed=3, shift=20_000, p=(0.1, 0.1, 0.8)), dataset_timestamp=TS_2)
        segmented = why.log(frame(seed=4), schema=DatasetSchema(segments=segment_on_column("city")))
        ok3, segment_links = (
            segmented.writer("songbird")
            .option(endpoint=server.url, config_dir=str(cfg), dataset_timestamp=TS_REF)
            .write()
        )
        assert ok1 and ok2 and ok3
        yield {
            "server": server,
            "session_id": session_id,
            "ref_id": ref_id,
            "url1": url1,
            "url2": url2,
            "segment_links": [u for _, u in segment_links],
            "config_dir": cfg,
        }


# -- the profile page -------------------------------------------------------------------------


def test_writer_link_opens_a_page_with_the_profiles_own_numbers(site):
    server = site["server"]
    r = get(site["url1"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    view = why.log(frame(seed=2)).view()
    assert header_field(r.text, 1, "kind")[1] == "batch"
    assert header_field(r.text, 1, "rows") == ("600", "600")
    assert header_field(r.text, 1, "columns") == ("4", "4")
    assert header_field(r.text, 1, "timestamp")[0] == str(TS_1)
    assert "2023-11-15 22:13:20 UTC" in header_field(r.text, 1, "timestamp")[1]
    for name, column in view.get_columns().items():
        own = column.to_summary_dict()
        html_card = card(r.text, name)
        assert cell(html_card, "count") == (str(own["counts/n"]), f"{own['counts/n']:,}")
        assert cell(html_card, "null_count")[0] == str(own["counts/null"])
        if "distribution/mean" in own and own.get("distribution/n"):
            raw, text = cell(html_card, "mean")
            assert float(raw) == pytest.approx(own["distribution/mean"], rel=1e-12)
            assert float(text.replace(",", "")) == pytest.approx(own["distribution/mean"], rel=1e-5)
            assert float(cell(html_card, "median")[0]) == own["distribution/median"]
    raw, text = cell(card(r.text, "score"), "null_fraction")
    expected = frame(seed=2)["score"].isna().mean()  # pandas, not the server's arithmetic
    assert 0 < expected < 1, "the frame has some null scores"
    assert float(raw) == pytest.approx(expected, rel=1e-12)
    assert text.endswith("%") and float(text[:-1]) == pytest.approx(100 * expected, abs=0.05)
    assert cell(card(r.text, "city"), "inferred_type")[1] == "string"
    assert "São Paulo" in cell(card(r.text, "city"), "frequent_items")[1]
    # chart data is embedded once, for every column, not fetched per chart
    payload = chart_payload(r.text)
    assert set(payload["charts"]) == {"0", "1", "2", "3"}
    assert {c["kind"] for c in payload["charts"].values()} == {"histogram", "bar"}
    assert r.text.count('class="column-card"') == 4 and r.text.count("data-chart=") == 4
    assert 'id="column-filter"' in r.text and 'id="drift"' not in r.text
    assert server.stats()["observatory_page"] >= 1


def test_reference_header_and_escaped_alias(site):
    r = get(page_url(site["server"], [site["ref_id"]], site["session_id"]))
    assert r.status_code == 200
    assert header_field(r.text, 1, "kind")[1] == "reference"
    assert header_field(r.text, 1, "alias")[1] == "training <b>set</b>"
    assert "<b>set</b>" not in r.text and "training &lt;b&gt;set&lt;/b&gt;" in r.text


def test_three_profile_comparison_has_drift_most_drifted_first(site):
    server, sid = site["server"], site["session_id"]
    r = get(page_url(server, [site["ref_id"], TS_1, TS_2], sid))
    assert r.status_code == 200
    assert r.text.count('class="profile-card"') == 3
    assert r.text.index('id="drift"') < r.text.index('id="columns"')
    table = re.search(r'<table class="drift-table" id="drift-table">.*?</table>', r.text, re.S).group(0)
    rows = re.findall(r'<tr data-column="([^"]*)" data-drift="([^"]*)">', table)
    assert {name for name, _ in rows} == {"age", "income", "score", "city"}
    assert rows[0][1] == "DRIFT" and {rows[0][0], rows[1][0]} == {"income", "city"}
    # profile 3 drifted in income (KS) and city (chi-square); profile 2 did not
    for column, algorithm in (("income", "ks"), ("city", "chi-square")):
        row = re.search(r'<tr data-column="' + column + r'".*?</tr>', table, re.S).group(0)
        assert re.search(r'data-compare="3" data-drift-category="DRIFT"', row)
        assert re.search(r'data-compare="2" data-drift-category="NO_DRIFT"', row)
        assert f'data-compare="3" data-field="algorithm">{algorithm}<' in row
        p_value = float(re.search(r'data-compare="3" data-field="measure" data-value="([^"]+)"', row).group(1))
        assert p_value < 0.05
    assert 'data-drift="DRIFT"' in card(r.text, "income")
    # charts overlay the three profiles
    payload = chart_payload(r.text)
    assert len(payload["profiles"]) == 3
    assert all(len(c["counts"]) == 3 for c in payload["charts"].values())
    # each profile can be opened alone
    alone = re.findall(r'<a class="small open-alone" href="([^"]+)"', r.text)
    assert len(alone) == 3 and all(get(html.unescape(u)).status_code == 200 for u in alone)


def test_segmented_batch_is_merged_and_lists_its_segments(site):
    server, sid = site["server"], site["session_id"]
    whole = get(page_url(server, [TS_REF], sid))
    assert whole.status_code == 200
    assert header_field(whole.text, 1, "rows")[0] == "600"
    assert header_field(whole.text, 1, "segment")[1] == "all 3 segments merged"
    links = [html.unescape(u) for u in re.findall(r'<a class="segment-link" href="([^"]+)"', whole.text)]
    assert sorted(query(u)["segment"][0] for u in links) == sorted(segment_label([("city", v)]) for v in SEGMENT_VALUES)
    counts = frame(seed=4)["city"].value_counts()
    for url in links + site["segment_links"]:
        r = get(url)
        assert r.status_code == 200, url
        label = query(url)["segment"][0]
        [value] = [v for v in SEGMENT_VALUES if segment_label([("city", v)]) == label]
        assert header_field(r.text, 1, "rows")[0] == str(counts[value])
        assert header_field(r.text, 1, "segment")[1] == label


def test_session_page_lists_every_profile_newest_first_with_links(site):
    server, sid = site["server"], site["session_id"]
    r = get(f"{server.url}/sessions/{sid}")
    assert r.status_code == 200
    store_rows = server.store.list_profiles(sid)
    ids = re.findall(r'<tr data-upload="([^"]+)"', r.text)
    assert sorted(ids) == sorted(u.id for u in store_rows) and len(ids) == 6
    by_id = {u.id: u for u in store_rows}
    stored = [by_id[i].stored_at for i in ids]
    assert stored == sorted(stored, reverse=True)
    assert ids[-1] == site["ref_id"]
    assert r.text.count('type="checkbox" name="profile"') == 6
    for link in re.findall(r'<a class="profile-link" href="([^"]+)"', r.text):
        assert get(html.unescape(link)).status_code == 200
    # the picker form submits to the profiles page with the session token
    assert 'action="/resources/model-1/profiles"' in r.text and f'name="sessionToken" value="{sid}"' in r.text


def test_landing_page_lists_sessions_and_shows_how_to_send(site):
    server = site["server"]
    r = get(server.url + "/")
    assert r.status_code == 200
    assert f'href="/sessions/{site["session_id"]}"' in r.text
    text = html.unescape(r.text)
    assert f'why.log(df).writer("songbird").option(endpoint="{server.url}").write()' in text
    assert f"SONGBIRD_API_ENDPOINT={server.url}" in text


def test_static_files_are_served_locally_and_pages_load_nothing_from_outside(site):
    server = site["server"]
    plotly = get(f"{server.url}/static/plotly.min.js")
    assert plotly.status_code == 200 and "javascript" in plotly.headers["content-type"]
    assert len(plotly.content) > 1_000_000
    for name in ("observatory.css", "observatory.js"):
        assert get(f"{server.url}/static/{name}").status_code == 200
    assert get(f"{server.url}/static/../app.py").status_code == 404
    assert get(f"{server.url}/static/nope.js").status_code == 404
    sid = site["session_id"]
    for url in (server.url + "/", f"{server.url}/sessions/{sid}", page_url(server, [site["ref_id"], TS_1], sid)):
        text = get(url).text
        for attr in re.findall(r'(?:src|href)="([^"]*)"', text):
            target = html.unescape(attr)
            assert target.startswith(("/", "#", "data:", server.url)), target


# -- errors -----------------------------------------------------------------------------------


def test_error_pages_say_what_was_not_found_or_wrong(site):
    server, sid, ref = site["server"], site["session_id"], site["ref_id"]
    base = f"{server.url}/resources/model-1/profiles"
    unknown_session = "session-" + "Z" * 24
    unknown_ref = "ref-" + "Q" * 24
    cases = [
        (dict(profile=[ref] * 4, sessionToken=sid), 400, "4 profiles"),
        (dict(profile=[ref, TS_1, TS_2, ref], sessionToken=sid), 400, "1 to 3"),
        (dict(sessionToken=sid), 400, "names no profile"),
        (dict(profile="yesterday", sessionToken=sid), 400, "'yesterday' is not a profile"),
        (dict(profile="ref-short", sessionToken=sid), 400, "is not a profile"),
        (dict(profile="99999999999999999999", sessionToken=sid), 400, "is not a profile"),
        (dict(profile=ref, sessionToken="bogus"), 400, "'bogus' is not a session id"),
        (dict(profile=ref, sessionToken=unknown_session), 404, f"Session {unknown_session} is unknown"),
        (dict(profile=ref), 404, "no session"),
        (dict(profile=unknown_ref, sessionToken=sid), 404, f"no profile {unknown_ref}"),
        (dict(profile=str(TS_1 + 1), sessionToken=sid), 404, f"dataset timestamp {TS_1 + 1}"),
        (dict(profile=TS_REF, sessionToken=sid, segment="city=Lyon"), 404, "no segment 'city=Lyon'"),
        (dict(profile=TS_1, sessionToken=sid, segment="city=x"), 404, "not segmented"),
        (dict(profile=[ref, TS_1], sessionToken=sid, segment=["a=1", "b=2", "c=3"]), 400, "3 segment parameters"),
        (dict(profile=[ref, TS_1], sessionToken=sid, segment=["a=1", ""]), 400, "not a batch timestamp"),
    ]
    for params, status, text in cases:
        r = requests.get(base, params=params, timeout=TIMEOUT)
        assert r.status_code == status, (params, r.status_code, r.text[:300])
        assert r.headers["content-type"].startswith("text/html")
        assert text in error_message(r), (params, error_message(r))
    r = get(f"{server.url}/resources/model-2/profiles", profile=ref, sessionToken=sid)
    assert r.status_code == 404 and "model-2" in error_message(r)
    r = get(f"{server.url}/sessions/{unknown_session}")
    assert r.status_code == 404 and unknown_session in error_message(r)
    r = get(f"{server.url}/sessions/not-a-session")
    assert r.status_code == 400 and "not-a-session" in error_message(r)


def test_odd_queries_never_fail_with_500(site):
    server, sid, ref = site["server"], site["session_id"], site["ref_id"]
    base = f"{server.url}/resources/model-1/profiles"
    odd_values = [
        "",
        " ",
        "-1",
        "0",
        "1e3",
        "١٢٣",
        "ref-" + "é" * 20,
        "log-" + "_" * 20,
        "\x00",
        "%",
        "&",
        "<x>",
        "9" * 19,
        "-" + "9" * 19,
        str(2**63),
        "ref-" + "A" * 200,
        "session-" + "A" * 24,
    ]
    for value in odd_values:
        for params in (
            {"profile": value, "sessionToken": sid},
            {"profile": ref, "sessionToken": value},
            {"profile": TS_REF, "sessionToken": sid, "segment": value},
            {"profile": [ref, value], "sessionToken": sid},
        ):
            r = requests.get(base, params=params, timeout=TIMEOUT)
            assert r.status_code < 500, (params, r.status_code)
        assert get(f"{server.url}/sessions/{requests.utils.quote(value, safe='')}").status_code < 500


def test_malformed_timestamp_selectors_answer_400_not_500(site):
    server, sid, ref = site["server"], site["session_id"], site["ref_id"]
    base = f"{server.url}/resources/model-1/profiles"
    malformed = ["--5", "--2", "-", "5-", "1-2", "+5", "-+5", " 5", "5 ", "5\n", "٣", "0x10", "-" + "9" * 19, "9" * 20]
    for value in malformed:
        for profiles in ([value], [ref, value], [TS_1, value, ref]):
            r = requests.get(base, params={"profile": profiles, "sessionToken": sid}, timeout=TIMEOUT)
            assert r.status_code == 400, (profiles, r.status_code)
            assert f"{value!r} is not a profile" in error_message(r), (profiles, error_message(r))
    # with a segment, and as the timestamp of a one-profile page
    r = requests.get(base, params={"profile": ["--2", TS_REF], "sessionToken": sid, "segment": "a=b"}, timeout=TIMEOUT)
    assert r.status_code == 400


def test_timestamp_selectors_are_parsed_by_one_helper(tmp_path):
    assert parse_timestamp_selector(str(TS_1)) == TS_1
    assert parse_timestamp_selector("-5") == -5 and parse_timestamp_selector("0") == 0
    assert parse_timestamp_selector(str(2**63 - 1)) == 2**63 - 1
    assert parse_timestamp_selector(str(-(2**63))) == -(2**63)
    for bad in ("--5", "-", "", "+5", "1e3", "١٢٣", "5\n", " 5", str(2**63), str(-(2**63) - 1), "9" * 20, "ref-x"):
        assert parse_timestamp_selector(bad) is None, bad
    store = Store(tmp_path)
    try:
        session = store.create_session("u")
        upload = store.create_upload(session.id, "batch", ttl_seconds=60, dataset_timestamp=-5)
        store_profile_bytes(store, upload.id, why.log(frame(n=10)).view().serialize())
        assert [u.id for u in store.resolve_profile(session.id, "-5")] == [upload.id]
        for bad in ("--5", "--2", "-", str(2**63)):
            assert store.resolve_profile(session.id, bad) == []
    finally:
        store.close()


def test_a_column_too_wide_to_chart_still_renders(tmp_path, shared_sandbox):
    df = pd.DataFrame({"x": [-1e308, 1e308, 0.0], "y": [1.0, 2.0, 3.0]})
    with LocalServer(data_dir=tmp_path / "data", sandbox=shared_sandbox) as server:
        ok, url = write(server, tmp_path / "cfg", df)
        assert ok
        r = get(url)
        assert r.status_code == 200, error_message(r)
        x = card(r.text, "x")
        assert "range too wide to chart" in x and "data-chart=" not in x
        assert cell(x, "count") == ("3", "3") and cell(x, "max")[0] == repr(1e308)
        charts = chart_payload(r.text)["charts"]
        assert "0" not in charts and charts["1"]["kind"] == "histogram"  # x has no chart, y has one
        sid = query(url)["sessionToken"][0]
        ok, url2 = write(server, tmp_path / "cfg", pd.DataFrame({"x": [0.0, 1.0, 2.0], "y": [1.0, 2.0, 3.0]}))
        assert ok
        upload_ids = [u.id for u in server.store.list_profiles(sid)]
        r = get(page_url(server, upload_ids, sid))  # compared with a profile that can be charted
        assert r.status_code == 200, error_message(r)
        assert "range too wide to chart" in card(r.text, "x")


def test_a_profile_failing_the_full_check_is_shown_as_invalid_not_a_500(tmp_path, shared_sandbox):
    from profile_crafting import unknown_metric_index

    with LocalServer(data_dir=tmp_path / "data", sandbox=shared_sandbox) as server:
        sid = requests.post(f"{server.url}/v0/sessions", json={"userId": "u"}, timeout=TIMEOUT).json()["id"]
        up = requests.post(
            f"{server.url}/v0/sessions/{sid}/upload", json={"datasetTimestamp": TS_1}, timeout=TIMEOUT
        ).json()
        broken = unknown_metric_index(why.log(frame(seed=5)).view().serialize())
        assert requests.put(up["uploadUrl"], data=broken, timeout=TIMEOUT).status_code == 200, "passes the cheap check"
        deadline = time.monotonic() + 30
        while server.store.get_upload(up["id"]).ingest_state != "invalid":
            assert time.monotonic() < deadline, "the ingest worker marks it invalid"
            time.sleep(0.05)
        for url in (page_url(server, [TS_1], sid), page_url(server, [up["id"]], sid)):
            r = get(url)
            assert r.status_code == 422 and "could not be read" in error_message(r)
        assert get(f"{server.url}/sessions/{sid}").status_code == 200


def test_a_replaced_profile_is_shown_fresh_not_from_cache(tmp_path, shared_sandbox):
    with LocalServer(data_dir=tmp_path / "data", sandbox=shared_sandbox) as server:
        sid = requests.post(f"{server.url}/v0/sessions", json={"userId": "u"}, timeout=TIMEOUT).json()["id"]
        up = requests.post(
            f"{server.url}/v0/sessions/{sid}/upload",
            json={"datasetTimestamp": TS_1, "segmentTags": []},
            timeout=TIMEOUT,
        ).json()
        first = why.log(frame(seed=6, n=50)).view().serialize()
        second = why.log(frame(seed=7, n=80)).view().serialize()
        assert requests.put(up["uploadUrl"], data=first, timeout=TIMEOUT).status_code == 200
        url = page_url(server, [up["id"]], sid)
        assert header_field(get(url).text, 1, "rows")[0] == "50"
        assert header_field(get(url).text, 1, "rows")[0] == "50"
        assert requests.put(up["uploadUrl"], data=second, timeout=TIMEOUT).status_code == 200
        assert header_field(get(url).text, 1, "rows")[0] == "80"


def test_hostile_names_are_escaped_everywhere(tmp_path, shared_sandbox):
    evil = '</script><script>alert("x")</script>'
    df = pd.DataFrame({evil: [1.0, 2.0, 3.0], "s": [evil, evil, "b"], "t": ["é&<", "/?#", "x"]})
    with LocalServer(data_dir=tmp_path / "data", sandbox=shared_sandbox) as server:
        seg = why.log(df, schema=DatasetSchema(segments=segment_on_column("t")))
        ok, links = seg.writer("songbird").option(endpoint=server.url, config_dir=str(tmp_path / "c")).write()
        assert ok and len(links) == 3
        labels = []
        for _, url in links:
            r = get(url)
            assert r.status_code == 200
            assert "<script>alert" not in r.text and "&lt;/script&gt;&lt;script&gt;" in r.text
            payload = chart_payload(r.text)  # the JSON stays parseable and holds the raw values
            labels += [label for c in payload["charts"].values() for label in c.get("labels", [])]
        assert evil in labels
        sid = query(links[0][1])["sessionToken"][0]
        r = get(f"{server.url}/sessions/{sid}")
        assert r.status_code == 200 and "<script>alert" not in r.text and "é&amp;&lt;" in r.text


def test_a_full_page_of_a_thousand_columns_renders_with_one_embedded_chart_payload(tmp_path, shared_sandbox):
    rng = np.random.default_rng(8)
    df = pd.DataFrame(rng.normal(size=(50, 1000)), columns=[f"feature_{i:04d}" for i in range(1000)])
    with LocalServer(data_dir=tmp_path / "data", sandbox=shared_sandbox) as server:
        ok, url = write(server, tmp_path / "cfg", df)
        assert ok
        r = get(url)
        assert r.status_code == 200
        assert r.text.count('class="column-card"') == 100  # a page: the first 100 columns
        assert len(chart_payload(r.text)["charts"]) == 100
        assert r.text.count("<script") == 3  # the JSON payload, plotly.js and the page script


# -- pure helpers -----------------------------------------------------------------------------


def test_links_round_trip_any_segment_value():
    sid = "session-" + "A" * 24
    for value in SEGMENT_VALUES + ["x=y,z", "100%", "+ +"]:
        label = segment_label([("city", value), ("k", "v")])
        url = observatory_link("http://127.0.0.1:1", sid, ["1700000000000"], [label])
        assert query(url) == {"profile": ["1700000000000"], "sessionToken": [sid], "segment": [label]}
        assert "#" not in urlsplit(url).query and urlsplit(url).fragment == ""


def test_segment_parameters():
    assert _parse_segments([], ["1", "ref-" + "a" * 20]) == [None, None]
    assert _parse_segments(["k=v"], ["1", "ref-" + "a" * 20, "2"]) == ["k=v", None, "k=v"]
    assert _parse_segments(["k=v", ""], ["1", "2"]) == ["k=v", None]
    with pytest.raises(PageError) as error:
        _parse_segments(["a", "b"], ["1"])
    assert error.value.status == 400


def test_script_json_cannot_break_out_of_its_element():
    text = str(_json_for_script({"a": "</script><!-- & é"}))
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == {"a": "</script><!-- & é"}


def test_number_format():
    assert _number(None) == "—" and _number(1234567) == "1,234,567" and _number(2.0) == "2"
    assert _number(0.000123456789) == "0.000123457" and _number(float("inf")) == "∞"


def test_lru_cache_computes_once_and_evicts_oldest():
    cache = LruCache(2)
    calls = []
    for key in ("a", "a", "b", "c", "a"):
        cache.get_or_compute((key,), lambda key=key: calls.append(key) or key)
    assert calls == ["a", "b", "c", "a"] and len(cache) == 2 and cache.hits == 1


def test_profile_cache_is_keyed_by_content(tmp_path):
    store = Store(tmp_path)
    try:
        session = store.create_session("u")
        upload = store.create_upload(session.id, "batch", ttl_seconds=60, dataset_timestamp=TS_1)
        stored = store_profile_bytes(store, upload.id, why.log(frame(n=10)).view().serialize())
        cache = ProfileCache(store)
        key = ((stored.id, stored.sha256, stored.size, stored.stored_at),)
        assert cache.summary(key, [stored]).row_count == 10
        assert cache.summary(key, [stored]).row_count == 10 and cache.summaries.hits == 1
        replaced = store_profile_bytes(store, upload.id, why.log(frame(n=20)).view().serialize())
        new_key = ((replaced.id, replaced.sha256, replaced.size, replaced.stored_at),)
        assert new_key != key and cache.summary(new_key, [replaced]).row_count == 20
    finally:
        store.close()


def test_a_page_rebuilds_only_its_columns_and_the_outline_counts_the_whole_profile(tmp_path):
    """Names and rows come from the digests of every upload; views and summaries only of the columns
    asked for. The expected numbers come from pandas and whylogs' own merge."""
    store = Store(tmp_path)
    try:
        session = store.create_session("u")
        first = pd.DataFrame({"a": range(30), "b": [1.5] * 30, "c": ["x"] * 30})
        second = pd.DataFrame({"d": range(50), "a": range(50)})
        stored = []
        for data in (first, second):
            upload = store.create_upload(session.id, "batch", ttl_seconds=60, dataset_timestamp=TS_1)
            stored.append(store_profile_bytes(store, upload.id, why.log(data).view().serialize()))
        cache = ProfileCache(store)
        key = (tuple((u.id, u.sha256, u.size, u.stored_at) for u in stored), None)
        outline = cache.outline(key, stored)
        assert outline.names == ("a", "b", "c", "d")  # the first upload's order, then the others' new ones
        assert outline.column_count == 4 and outline.row_count == len(first) + len(second)  # "a" is in both

        part = cache.view(key, stored, ("d", "a", "missing"))
        assert sorted(part.get_columns()) == ["a", "d"]
        merged = why.log(first).view().merge(why.log(second).view())
        assert part.get_column("a").get_metric("counts").n.value == merged.get_column("a").get_metric("counts").n.value
        summary = cache.summary(key, stored, ("a",))
        assert list(summary.columns) == ["a"] and summary.columns["a"].count == 80
        assert summary.columns["a"].mean == pytest.approx(pd.concat([first.a, second.a]).mean())
        assert cache.view(key, stored, ("d", "a", "missing")) is part and cache.views.hits >= 1
    finally:
        store.close()


def test_path_of_templates_and_static_files_ship_with_the_package():
    package = Path(whylogs_songbird.__file__).parent / "server"
    for name in (
        "base.html",
        "profiles.html",
        "_columns.html",
        "_drift.html",
        "session.html",
        "landing.html",
        "error.html",
        "login.html",
    ):
        assert (package / "templates" / name).is_file()
    assert (package / "static" / "observatory.js").is_file() and (package / "static" / "observatory.css").is_file()
