"""The observatory pages of an organization's dataset over real HTTP, on both stores: opened by the
signed token of an observatory link (which sets a cookie for the next pages) or by a login with an
API key of the org; refused without either, with an expired or changed token, or with a key of
another org, showing nothing of the dataset and echoing no key. A drifted batch of the dataset
sends a notification naming the org and dataset, whose link opens the dataset's timeline. And in a
real browser: the login form, then the dataset's timeline with its points.

One server per store for the module (with monitors and a webhook receiver), written once.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import playwright_helpers
import pytest
import requests
import whylogs as why
from conftest import STORAGE_NAMES, make_store_config
from notify_receiver import Receiver, monitors_file, notify_table, settled
from playwright_helpers import Watched, needs_chromium, wait_until
from prometheus_client.parser import text_string_to_metric_families
from stored_profiles import wait_recorded
from typer.testing import CliRunner

from whylogs_songbird.cli import app as cli_app
from whylogs_songbird.server import LocalServer
from whylogs_songbird.server.datasets import link_token
from whylogs_songbird.server.page_access import DATASET_COOKIE, ORG_COOKIE, safe_next

browser = playwright_helpers.browser  # the shared fixture

TIMEOUT = 30
ORG = "org-pages"
DATASET = "model-3"
KEY = "PagesKey01.pagesS3cretpagesS3cret:" + ORG
SECRET = KEY.split(".")[1].split(":")[0]
OTHER_KEY = "OtherKey02.otherS3cretotherS3cret:org-other"
DAY_MS = 86_400_000
T0 = 1_700_000_000_000 - 1_700_000_000_000 % DAY_MS
COLUMN = "pagescolumnmarker"


def _profile(rows: int, shift: float = 0.0) -> bytes:
    frame = pd.DataFrame(
        {COLUMN: [shift + i % 10 for i in range(rows)], "kind": ["a" if i % 2 else "b" for i in range(rows)]}
    )
    return why.log(frame).view().serialize()


def write_dataset(url: str, *, days: int = 2) -> dict[str, str]:
    """A reference and ``days`` daily batches of the dataset, through the raw log API (as whylogs calls it)."""
    headers = {"X-API-Key": KEY}
    base = f"{url}/v0/organizations/{ORG}"
    ref = requests.post(
        f"{base}/log/reference/{DATASET}",
        json={"alias": "training", "datasetTimestamp": T0},
        headers=headers,
        timeout=TIMEOUT,
    ).json()
    assert requests.put(ref["uploadUrl"], data=_profile(40), timeout=TIMEOUT).status_code == 200
    for day in range(days):
        slot = requests.post(
            f"{base}/log/async/{DATASET}",
            json={"datasetTimestamp": T0 + day * DAY_MS},
            headers=headers,
            timeout=TIMEOUT,
        ).json()
        assert (
            requests.put(slot["uploadUrl"], data=_profile(20 + day, shift=day * 50.0), timeout=TIMEOUT).status_code
            == 200
        )
    r = requests.put(
        f"{base}/models/{DATASET}/schema/column/{COLUMN}",
        json={"classifier": "output", "dataType": "fractional", "discreteness": "continuous"},
        headers=headers,
        timeout=TIMEOUT,
    )
    assert r.status_code == 200, r.text
    r = requests.put(
        f"{base}/dataset/{DATASET}/weights",
        json={"segmentWeights": [{"weights": {COLUMN: 0.75}}]},
        headers=headers,
        timeout=TIMEOUT,
    )
    assert r.status_code == 200, r.text
    return {"ref": ref["id"]}


def observatory_link(url: str, profiles: dict) -> str:
    r = requests.post(
        f"{url}/v0/organizations/{ORG}/log/observatory-link/{DATASET}",
        json=profiles,
        headers={"X-API-Key": KEY},
        timeout=TIMEOUT,
    )
    assert r.status_code == 200, r.text
    return r.json()["observatoryUrl"]


@pytest.fixture(scope="module", params=STORAGE_NAMES)
def served(request, tmp_path_factory, shared_sandbox) -> Iterator[tuple[LocalServer, dict[str, str], Receiver]]:
    """A server of the store (its keys: the org's and another org's; drift monitors notifying a
    receiver), the dataset written, and every notification of it sent."""
    receiver = Receiver()
    root = tmp_path_factory.mktemp("dataset-pages")
    monitors = monitors_file(root, notify_table(receiver.url))
    with pytest.MonkeyPatch.context() as patch:
        config = make_store_config(request.param, request, patch)
        server = LocalServer(
            data_dir=root / "data", api_keys=[KEY, OTHER_KEY], monitors=monitors, sandbox=shared_sandbox, **config
        ).start()
        try:
            seeded = write_dataset(server.url)
            deadline = time.monotonic() + 60
            while not (settled(server) and receiver.payloads()):
                assert time.monotonic() < deadline, "the dataset's drift was never notified"
                time.sleep(0.05)
            yield server, seeded, receiver
        finally:
            server.stop()
            receiver.close()


@pytest.fixture
def pages(served):
    return served[0], served[1]


def _set_cookie(response: requests.Response) -> str:
    return response.headers.get("set-cookie", "")


def test_a_link_opens_the_pages_and_its_cookie_opens_the_next(pages):
    server, seeded = pages
    link = observatory_link(
        server.url, {"batchProfileTimestamps": [T0 + DAY_MS], "referenceProfileIds": [seeded["ref"]]}
    )
    http = requests.Session()
    r = http.get(link, timeout=TIMEOUT)
    assert r.status_code == 200, r.text[:500]
    assert "Comparing 2 profiles" in r.text and COLUMN in r.text
    cookie = _set_cookie(r)
    assert cookie.startswith(f"{DATASET_COOKIE}="), cookie
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", f"path=/organizations/{ORG}/datasets/{DATASET}".lower()} <= flags
    assert any(f.startswith("max-age=") for f in flags)
    # the page's own links carry no token: the cookie opens them
    token = parse_qs(urlsplit(link).query)["token"][0]
    assert token not in r.text
    for path in (
        "",
        "/timeline?granularity=day",
        f"/profiles?profile={seeded['ref']}",
        "/timeline/data?granularity=day",
    ):
        r = http.get(f"{server.url}/organizations/{ORG}/datasets/{DATASET}{path}", timeout=TIMEOUT)
        assert r.status_code == 200, (path, r.text[:300])
        assert COLUMN in r.text, path
    overview = http.get(f"{server.url}/organizations/{ORG}/datasets/{DATASET}", timeout=TIMEOUT).text
    assert 'id="schema-columns"' in overview and "output" in overview and "0.75" in overview
    data = http.get(
        f"{server.url}/organizations/{ORG}/datasets/{DATASET}/timeline/data?granularity=day", timeout=TIMEOUT
    ).json()
    assert data["session_id"] == f"{ORG}/{DATASET}" and len(data["buckets"]) == 2
    # a cookie of one dataset opens no other dataset's pages
    r = http.get(
        f"{server.url}/organizations/{ORG}/datasets/model-other/timeline", timeout=TIMEOUT, allow_redirects=False
    )
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")


def test_expired_changed_or_missing_tokens_open_nothing(pages):
    server, _ = pages
    signer = server.app.state.signer
    page = f"{server.url}/organizations/{ORG}/datasets/{DATASET}/timeline"
    expired = link_token(signer, ORG, DATASET, int(time.time()) - 5)
    good = link_token(signer, ORG, DATASET, int(time.time()) + 600)
    expires, _, signature = good.partition(".")
    changed = [
        f"{int(expires) + 3600}.{signature}",  # a later expiry, same signature
        f"{expires}.{signature[:-1]}{'0' if signature[-1] != '0' else '1'}",
        link_token(signer, ORG, "model-other", int(time.time()) + 600),  # another dataset's
        "garbage",
    ]
    for token in [expired, *changed]:
        r = requests.get(page, params={"token": token}, timeout=TIMEOUT, allow_redirects=False)
        assert r.status_code == 401, (token, r.status_code)
        assert "set-cookie" not in r.headers and COLUMN not in r.text
        assert "expired or was changed" in r.text and 'id="login-link"' in r.text
    r = requests.get(page, timeout=TIMEOUT, allow_redirects=False)
    assert (
        r.status_code == 303
        and r.headers["location"] == "/login?next=%2Forganizations%2Forg-pages%2Fdatasets%2Fmodel-3%2Ftimeline"
    )
    r = requests.get(f"{page}/data", timeout=TIMEOUT)
    assert r.status_code == 401 and "X-API-Key" in r.json()["message"]
    # a cookie forged for the path, or one of another org, is no credential
    for name, value in (
        (DATASET_COOKIE, f"{int(time.time()) + 60}.-.{'0' * 64}"),
        (ORG_COOKIE, f"{int(time.time()) + 60}.r:x.{'0' * 64}"),
    ):
        r = requests.get(page, cookies={name: value}, timeout=TIMEOUT, allow_redirects=False)
        assert r.status_code == 303, name
    r = requests.get(page, params={"token": good}, timeout=TIMEOUT)
    assert r.status_code == 200 and COLUMN in r.text


def test_a_login_with_a_key_of_the_org_opens_its_datasets(pages):
    server, _ = pages
    page = f"/organizations/{ORG}/datasets/{DATASET}/timeline?granularity=day"
    http = requests.Session()
    r = http.get(server.url + page, timeout=TIMEOUT)  # redirected to the login form
    assert r.status_code == 200 and 'id="login-form"' in r.text and r.url.startswith(f"{server.url}/login?next=")
    r = http.post(f"{server.url}/login", data={"key": KEY, "next": page}, timeout=TIMEOUT, allow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == page
    cookie = _set_cookie(r)
    assert cookie.startswith(f"{ORG_COOKIE}=") and SECRET not in cookie and KEY not in cookie
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", f"path=/organizations/{ORG}"} <= flags
    r = http.get(server.url + page, timeout=TIMEOUT)
    assert r.status_code == 200 and COLUMN in r.text and 'id="heatmap"' in r.text
    r = http.get(f"{server.url}/organizations/{ORG}/datasets/{DATASET}/timeline/data", timeout=TIMEOUT)
    assert r.status_code == 200 and r.json()["session_id"] == f"{ORG}/{DATASET}"
    # the same key without its :ORG suffix is the same key
    r = requests.post(
        f"{server.url}/login", data={"key": KEY.rsplit(":", 1)[0], "next": page}, timeout=TIMEOUT, allow_redirects=False
    )
    assert r.status_code == 303


def test_wrong_and_foreign_keys_and_foreign_next_are_refused(pages, caplog):
    server, _ = pages
    page = f"/organizations/{ORG}/datasets/{DATASET}"
    wrong = KEY.replace("pagesS3cret", "guessS3cret", 1)
    for key, status, words in (
        (wrong, 401, "not accepted"),
        (OTHER_KEY, 403, "another organization"),
        ("", 400, "Paste an API key"),
    ):
        r = requests.post(
            f"{server.url}/login", data={"key": key, "next": page}, timeout=TIMEOUT, allow_redirects=False
        )
        assert r.status_code == status, (key, r.status_code)
        assert words in r.text and "set-cookie" not in r.headers
        assert (not key or key.split(".")[1][:12] not in r.text) and COLUMN not in r.text
    assert "guessS3cret" not in caplog.text and "otherS3cret" not in caplog.text
    for bad in (
        "https://evil.example/",
        "//evil.example/x",
        "/\\evil.example",
        "http:/x",
        "javascript:alert(1)",
        "/%2F/evil.example",
    ):
        assert safe_next(bad) is None, bad
        r = requests.post(f"{server.url}/login", data={"key": KEY, "next": bad}, timeout=TIMEOUT, allow_redirects=False)
        assert r.status_code == 400 and "set-cookie" not in r.headers, bad
        r = requests.get(f"{server.url}/login", params={"next": bad}, timeout=TIMEOUT)
        assert r.status_code == 400, bad
    r = requests.post(
        f"{server.url}/login",
        data={"key": KEY, "next": page},
        headers={"Origin": "https://evil.example"},
        timeout=TIMEOUT,
        allow_redirects=False,
    )
    assert r.status_code == 403 and "set-cookie" not in r.headers
    # a key of another org logged in for its own org reaches nothing of this one
    http = requests.Session()
    r = http.post(f"{server.url}/login", data={"key": OTHER_KEY, "next": "/"}, timeout=TIMEOUT, allow_redirects=False)
    assert r.status_code == 303
    r = http.get(server.url + page, timeout=TIMEOUT, allow_redirects=False)
    assert r.status_code == 303 and COLUMN not in r.text
    r = requests.get(f"{server.url}{page}/timeline/data", headers={"X-API-Key": OTHER_KEY}, timeout=TIMEOUT)
    assert r.status_code == 403 and COLUMN not in r.text


def test_a_drifted_batch_notifies_the_org_and_dataset_with_a_link_that_opens(served):
    server, _, receiver = served
    payloads = [p for p in receiver.payloads() if p["alert"]["start"] == T0 + DAY_MS]
    assert len(payloads) == 1, payloads  # once: the drifted column on the latest bucket
    payload = payloads[0]
    assert (payload["org"], payload["dataset"]) == (ORG, DATASET) and "session" not in payload
    assert payload["event"] == "monitor_failed" and payload["alert"]["column"] == COLUMN
    assert payload["alert"]["start"] == T0 + DAY_MS
    parts = urlsplit(payload["url"])
    assert f"{parts.scheme}://{parts.netloc}" == server.url
    assert parts.path == f"/organizations/{ORG}/datasets/{DATASET}/timeline"
    assert parts.fragment == f"bucket-{T0 + DAY_MS}"
    expires = int(parse_qs(parts.query)["token"][0].split(".")[0])
    assert 6 * 86400 < expires - time.time() <= 7 * 86400, "a dataset's alert link opens its pages for 7 days"
    http = requests.Session()
    r = http.get(payload["url"], timeout=TIMEOUT)
    assert r.status_code == 200 and f'id="bucket-{T0 + DAY_MS}"' in r.text and COLUMN in r.text
    assert r.headers["set-cookie"].startswith(f"{DATASET_COOKIE}=")
    row = r.text.split(f'data-column="{COLUMN}"', 1)[1].split("</tr>", 1)[0]
    assert 'class="hD"' in row, "the drifted bucket is marked in the heatmap"
    # /metrics labels the dataset ORG/DATASET, never by the id of the row that holds it
    metrics = requests.get(f"{server.url}/metrics", timeout=TIMEOUT).text
    drift = [
        s
        for family in text_string_to_metric_families(metrics)
        if family.name == "songbird_column_drift_category"
        for s in family.samples
        if s.labels["column"] == COLUMN
    ]
    assert [(s.labels["session"], s.value) for s in drift] == [(f"{ORG}/{DATASET}", 2.0)]
    if not server.config.database_url:  # `songbird alerts list` names the dataset too
        listing = CliRunner().invoke(cli_app, ["alerts", "list", "--data-dir", str(server.config.data_dir)])
        assert listing.exit_code == 0 and f"  {ORG}/{DATASET}  drift vs reference / {COLUMN}" in listing.output


def test_a_segmented_batch_of_a_dataset_opens_whole_and_by_segment(served):
    server, _, _ = served
    headers = {"X-API-Key": KEY}
    for value, rows in (("north", 6), ("south", 9)):
        slot = requests.post(
            f"{server.url}/v0/organizations/{ORG}/log/async/model-seg",
            json={"datasetTimestamp": T0, "segmentTags": [{"key": "region", "value": value}]},
            headers=headers,
            timeout=TIMEOUT,
        ).json()
        assert requests.put(slot["uploadUrl"], data=_profile(rows), timeout=TIMEOUT).status_code == 200
    pages = f"{server.url}/organizations/{ORG}/datasets/model-seg"
    container = server.store.find_dataset(ORG, "model-seg")
    assert container is not None
    wait_recorded(server.store, container.id)  # presigned PUTs: once the ingest worker saw them land
    r = requests.get(f"{pages}/profiles", params={"profile": T0}, headers=headers, timeout=TIMEOUT)
    assert r.status_code == 200, r.text[:300]
    links = re.findall(r'class="segment-link" href="([^"]+)"', r.text)
    assert [urlsplit(html.unescape(link)).path for link in links] == [urlsplit(pages).path + "/profiles"] * 2
    assert 'data-field="rows" data-value="15"' in r.text, "the whole batch: both segments"
    r = requests.get(html.unescape(links[1]), headers=headers, timeout=TIMEOUT)
    assert r.status_code == 200 and 'data-field="rows" data-value="9"' in r.text and "region=south" in r.text
    r = requests.get(
        f"{pages}/profiles", params={"profile": T0, "segment": "region=west"}, headers=headers, timeout=TIMEOUT
    )
    assert r.status_code == 404 and "Dataset model-seg of organization" not in r.text
    assert "has no segment" in r.text and f'href="{urlsplit(pages).path}"' in r.text


def test_a_transactions_batch_is_monitored_at_its_commit_not_before(served):
    server, _, receiver = served
    headers = {"X-API-Key": KEY}
    day = T0 + 2 * DAY_MS
    started = requests.post(
        f"{server.url}/v1/transaction", json={"datasetId": DATASET}, headers=headers, timeout=TIMEOUT
    )
    transaction = started.json()["transactionId"]
    slot = requests.post(
        f"{server.url}/v1/transaction/log",
        params={"transaction_id": transaction},
        json={"datasetTimestamp": day},
        headers=headers,
        timeout=TIMEOUT,
    ).json()
    assert requests.put(slot["uploadUrl"], data=_profile(22, shift=90.0), timeout=TIMEOUT).status_code == 200

    def notified() -> list[dict]:
        return [p for p in receiver.payloads() if p["alert"]["start"] == day]

    deadline = time.monotonic() + 60
    while not (server.app.state.timeline.idle() and settled(server)):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert notified() == [], "an open transaction's batch is no bucket of the dataset yet"
    r = requests.post(
        f"{server.url}/v1/transaction/commit", params={"transaction_id": transaction}, headers=headers, timeout=TIMEOUT
    )
    assert r.status_code == 200, r.text
    while not notified():
        assert time.monotonic() < deadline + 60, "the committed batch's drift was never notified"
        time.sleep(0.05)
    [payload] = notified()
    assert (payload["org"], payload["dataset"], payload["alert"]["column"]) == (ORG, DATASET, COLUMN)


@needs_chromium
def test_a_browser_logs_in_with_a_key_and_sees_the_datasets_timeline(served, request):
    server, _, _ = served
    if server.config.database_url:
        pytest.skip("the browser walks the pages once, on the embedded store")
    browser = request.getfixturevalue("browser")  # launched only when the test runs
    tab = Watched(browser, width=1400, height=1000)
    try:
        page = tab.page
        page.goto(f"{server.url}/organizations/{ORG}/datasets/{DATASET}/timeline?granularity=day")
        assert urlsplit(page.url).path == "/login"
        page.fill("#api-key", "not-a-key")
        with page.expect_navigation():
            page.click("#login-submit")
        assert "not accepted" in page.locator("#login-error").inner_text()
        assert page.locator("#api-key").input_value() == "", "a refused key is not echoed"
        tab.errors.clear()  # the browser logs the refused login's 401 as a failed load
        page.fill("#api-key", KEY)
        with page.expect_navigation():
            page.click("#login-submit")
        assert urlsplit(page.url).path == f"/organizations/{ORG}/datasets/{DATASET}/timeline"
        assert page.evaluate("document.cookie") == "", "the cookie is HttpOnly"
        rows = page.locator("#heatmap tbody tr")
        assert rows.count() == 2 and rows.nth(0).get_attribute("data-column") == COLUMN  # most drifted first
        chart = page.locator('[data-series="count"]').element_handle()
        wait_until(page, "el => el.data && el.data.length > 0", chart)  # drawn from the dataset's JSON
        counts = page.evaluate("() => document.querySelector('[data-series=count]').data[0].y")
        assert counts[:2] == [20, 21], "the points of the batches"
        tab.check_clean()
    finally:
        tab.close()
