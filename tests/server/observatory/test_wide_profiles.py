"""Pages of very wide profiles stay bounded (columns paged, with a server-side filter), and page
parts are computed once however many requests ask at the same time (single flight)."""

import concurrent.futures
import re

import numpy as np
import pandas as pd
import requests
import whylogs as why

TIMEOUT = 120
TS = 1_700_000_000_000


def wide_profile(columns, rows=5, seed=0):
    rng = np.random.default_rng(seed)
    return why.log(pd.DataFrame({f"c_{i:05d}": rng.normal(size=rows) for i in range(columns)})).view().serialize()


def upload(server, data):
    sid = requests.post(f"{server.url}/v0/sessions", json={"userId": "u"}, timeout=TIMEOUT).json()["id"]
    slot = requests.post(
        f"{server.url}/v0/sessions/{sid}/upload", json={"datasetTimestamp": TS}, timeout=TIMEOUT
    ).json()
    assert requests.put(slot["uploadUrl"], data=data, timeout=TIMEOUT).status_code == 200
    return sid, slot["observatoryUrl"]


def cards(text):
    return re.findall(r'<article class="column-card" id="col-(\d+)" data-column="([^"]+)"', text)


def test_a_wide_profile_is_paged_and_filtered_on_the_server(server):
    _, url = upload(server, wide_profile(2_300))
    first = requests.get(url, timeout=TIMEOUT)
    assert first.status_code == 200
    shown = cards(first.text)
    assert len(shown) == 100 and shown[0][1] == "c_00000" and shown[-1][1] == "c_00099"
    assert 'data-field="columns" data-value="2300"' in first.text, "the header counts every column"
    assert "columns 1–100 of 2,300" in first.text
    next_link = re.search(r'<a rel="next" href="([^"]+)"', first.text).group(1).replace("&amp;", "&")
    second = requests.get(next_link, timeout=TIMEOUT)
    assert [name for _, name in cards(second.text)][:2] == ["c_00100", "c_00101"]
    last = requests.get(url + "&page=23", timeout=TIMEOUT)
    assert len(cards(last.text)) == 100 and 'rel="next"' not in last.text
    assert [name for _, name in cards(last.text)][-1] == "c_02299"
    beyond = requests.get(url + "&page=99", timeout=TIMEOUT)
    assert cards(beyond.text) == cards(last.text), "a page past the end shows the last one"
    found = requests.get(url + "&column=C_0111", timeout=TIMEOUT)
    assert [name for _, name in cards(found.text)] == [f"c_0111{i}" for i in range(10)]
    assert "of 10 matching" in found.text
    assert max(len(first.text), len(last.text)) < 1_000_000, "a page of 100 cards, however wide the profile"


def test_concurrent_first_views_build_the_page_once(server):
    _, url = upload(server, wide_profile(300, seed=1))
    pages = server.app.state.observatory_cache.pages
    before = pages.misses
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: requests.get(url, timeout=TIMEOUT), range(8)))
    assert all(a.status_code == 200 for a in answers)
    assert len({len(a.text) for a in answers}) == 1
    assert pages.misses - before == 1, "single flight: one build for eight concurrent requests"
