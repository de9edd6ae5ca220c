"""The observatory pages in a real headless browser (Playwright driving Debian's chromium).

Profiles go through the songbird writer to a LocalServer; the pages must show the profiles' own
numbers, draw plotly charts with data, flag the drifted column, log no console errors and
request nothing from any host but 127.0.0.1. Screenshots of three pages are taken into a
temporary directory, or into ``$SONGBIRD_SCREENSHOTS_DIR`` when set: ``scripts/screenshots``
sets it to docs/img to refresh the documentation's pictures.
"""

import os

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")  # before anything imports whylogs


import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import playwright_helpers  # noqa: E402
import pytest  # noqa: E402
import whylogs as why  # noqa: E402
from playwright_helpers import needs_chromium, wait_until  # noqa: E402
from whylogs.core.schema import DatasetSchema  # noqa: E402
from whylogs.core.segmentation_partition import segment_on_column  # noqa: E402

import whylogs_songbird  # noqa: E402
from whylogs_songbird.server import LocalServer  # noqa: E402

pytestmark = needs_chromium
browser = playwright_helpers.browser  # the shared fixture
screenshots = playwright_helpers.screenshots  # the shared fixture
watched = playwright_helpers.watched  # the shared fixture
TS_1 = 1_700_086_400_000
TS_2 = 1_700_172_800_000
TS_3 = 1_700_259_200_000


def frame(seed, n=2000, shift=0.0, plans=(0.6, 0.3, 0.1)):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.normal(41, 11, n).round().clip(18, 90),
            "monthly_spend": rng.lognormal(4.2 + shift, 0.45, n).round(2),
            "sessions_per_week": np.where(rng.random(n) < 0.08, np.nan, rng.poisson(5, n)),
            "plan": rng.choice(["basic", "plus", "premium"], n, p=list(plans)),
            "country": rng.choice(["FR", "DE", "BR", "JP", "US"], n, p=[0.2, 0.2, 0.15, 0.15, 0.3]),
        }
    )


def shoot(page, path):
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"{path} holds a picture of the page"


@pytest.fixture(scope="module")
def uploads(tmp_path_factory, shared_sandbox):
    root = tmp_path_factory.mktemp("browser")
    reference_df, batch_df, drifted_df = frame(1), frame(2), frame(3, shift=0.6, plans=(0.2, 0.3, 0.5))
    with LocalServer(data_dir=root / "data", list_sessions=True, sandbox=shared_sandbox) as server:
        cfg = str(root / "config")
        refs = whylogs_songbird.publish_references(
            {"training": why.log(reference_df)}, endpoint=server.url, config_dir=cfg
        )
        ok1, url1 = (
            why.log(batch_df)
            .writer("songbird")
            .option(endpoint=server.url, config_dir=cfg, dataset_timestamp=TS_1)
            .write()
        )
        ok2, url2 = (
            why.log(drifted_df)
            .writer("songbird")
            .option(endpoint=server.url, config_dir=cfg, dataset_timestamp=TS_2)
            .write()
        )
        segmented = why.log(frame(4, n=900), schema=DatasetSchema(segments=segment_on_column("plan")))
        ok3, segment_links = (
            segmented.writer("songbird").option(endpoint=server.url, config_dir=cfg, dataset_timestamp=TS_3).write()
        )
        assert ok1 and ok2 and ok3 and refs.ok and len(segment_links) == 3
        yield {
            "server": server,
            "session_id": refs.session_id,
            "ref_id": refs.profiles[0].profile_id,
            "url1": url1,
            "url2": url2,
            "views": {
                "reference": why.log(reference_df).view(),
                "batch": why.log(batch_df).view(),
                "drifted": why.log(drifted_df).view(),
            },
        }


def draw_all_charts(page):
    """Scroll every chart into view and wait until plotly drew it with at least one trace."""
    charts = page.locator("[data-chart]")
    for i in range(charts.count()):
        chart = charts.nth(i)
        chart.scroll_into_view_if_needed()
        chart.locator(".main-svg").first.wait_for(state="attached", timeout=15_000)
        handle = chart.element_handle()
        wait_until(
            page,
            "el => el.classList.contains('js-plotly-plot') && el.data && el.data.length > 0",
            arg=handle,
            timeout=15_000,
        )
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(150)
    return charts.count()


def traces(page, column):
    """Per trace: the number of points plotly holds for one column's chart."""
    return page.evaluate(
        """name => {
            const card = [...document.querySelectorAll('.column-card')].find(c => c.dataset.column === name);
            const el = card.querySelector('[data-chart]');
            return el.data.map(t => (t.y || []).filter(v => v > 0).length);
        }""",
        column,
    )


def stat(page, column, stat_name, profile=1):
    cell = page.locator(
        f'.column-card[data-column="{column}"] tr[data-stat="{stat_name}"] td[data-profile="{profile}"]'
    )
    return cell.inner_text().strip(), cell.get_attribute("data-value")


def shown_number(text):
    text = text.replace(",", "").strip()
    return float(text.rstrip("%"))


def assert_numbers_match(page, view, profile=1):
    for name, column in view.get_columns().items():
        own = column.to_summary_dict()
        text, raw = stat(page, name, "count", profile)
        assert int(raw) == own["counts/n"] and shown_number(text) == own["counts/n"]
        text, raw = stat(page, name, "null_count", profile)
        assert int(raw) == own["counts/null"] and shown_number(text) == own["counts/null"]
        if own.get("distribution/n"):
            text, raw = stat(page, name, "mean", profile)
            assert float(raw) == pytest.approx(own["distribution/mean"], rel=1e-12)
            assert shown_number(text) == pytest.approx(own["distribution/mean"], rel=1e-5)


def test_single_profile_page(uploads, watched, screenshots):
    page = watched.page
    page.goto(uploads["url1"])
    assert page.locator(".profile-card").count() == 1
    assert page.locator('.profile-card [data-field="kind"]').inner_text().lower() == "batch"
    assert page.locator('.profile-card [data-field="rows"]').get_attribute("data-value") == "2000"
    assert_numbers_match(page, uploads["views"]["batch"])
    assert draw_all_charts(page) == 5
    assert sum(traces(page, "monthly_spend")) > 5  # a histogram with many non-empty bins
    assert traces(page, "plan") == [3]  # one bar trace with the three plans
    shoot(page, screenshots / "observatory-profile.png")

    # the filter box narrows the columns
    page.fill("#column-filter", "spend")
    wait_until(page, "document.querySelectorAll('.column-card:not([hidden])').length === 1")
    assert page.locator(".column-card:not([hidden])").get_attribute("data-column") == "monthly_spend"
    assert page.locator("#filter-count").inner_text() == "1 of 5 columns"
    page.fill("#column-filter", "")
    wait_until(page, "document.querySelectorAll('.column-card:not([hidden])').length === 5")
    watched.check_clean()


def test_three_profile_comparison(uploads, watched, screenshots):
    page = watched.page
    server, sid = uploads["server"], uploads["session_id"]
    url = (
        f"{server.url}/resources/model-1/profiles?profile={uploads['ref_id']}&profile={TS_1}&profile={TS_2}"
        f"&sessionToken={sid}"
    )
    page.goto(url)
    assert page.locator(".profile-card").count() == 3
    kinds = page.locator('.profile-card [data-field="kind"]').all_inner_texts()
    assert [k.lower() for k in kinds] == ["reference", "batch", "batch"]
    for profile, key in ((1, "reference"), (2, "batch"), (3, "drifted")):
        assert_numbers_match(page, uploads["views"][key], profile)

    # the drift table is near the top, the drifted columns first and flagged
    assert page.locator("#drift").bounding_box()["y"] < page.locator("#columns").bounding_box()["y"]
    first_rows = page.locator("#drift-table tbody tr")
    top_two = {first_rows.nth(0).get_attribute("data-column"), first_rows.nth(1).get_attribute("data-column")}
    assert top_two == {"monthly_spend", "plan"}
    spend_row = page.locator('#drift-table tr[data-column="monthly_spend"]')
    assert spend_row.locator('td[data-compare="3"][data-drift-category="DRIFT"]').count() == 1
    assert spend_row.locator('td[data-compare="2"][data-drift-category="NO_DRIFT"]').count() == 1
    badge = page.locator('.column-card[data-column="monthly_spend"] [data-drift-badge="3"]')
    assert badge.is_visible() and "drift" in badge.inner_text().lower()
    assert page.locator('.column-card[data-column="age"]').get_attribute("data-drift") == "NO_DRIFT"

    assert draw_all_charts(page) == 5
    assert len(traces(page, "monthly_spend")) == 3 and len(traces(page, "plan")) == 3  # overlaid profiles
    shoot(page, screenshots / "observatory-compare.png")

    # "drifted only" keeps the drifted columns
    page.check("#only-drifted")
    wait_until(page, "document.querySelectorAll('.column-card:not([hidden])').length === 2")
    page.uncheck("#only-drifted")
    watched.check_clean()


def test_session_page_picks_up_to_three_and_opens_them(uploads, watched, screenshots):
    page = watched.page
    server, sid = uploads["server"], uploads["session_id"]
    page.goto(f"{server.url}/sessions/{sid}")
    rows = page.locator("#session-profiles tbody tr")
    assert rows.count() == 6
    kinds = [rows.nth(i).get_attribute("data-kind") for i in range(6)]
    assert kinds == ["batch"] * 5 + ["reference"]  # newest upload first: the segments, the batches, the reference
    assert page.locator("#session-profiles .tag").count() == 3  # the segment of each segmented upload
    assert page.locator("#open-selected").is_disabled()
    boxes = page.locator('input[name="profile"]')
    boxes.nth(3).check()
    boxes.nth(5).check()
    assert page.locator("#open-selected").inner_text() == "Compare 2 profiles"
    shoot(page, screenshots / "observatory-session.png")
    boxes.nth(4).check()
    assert page.locator("#open-selected").is_enabled()
    assert "3 of at most 3" in page.locator("#pick-count").inner_text()
    assert all(boxes.nth(i).is_disabled() for i in range(3))  # no fourth pick
    # a row link opens that one profile; a segment row also links its whole batch
    assert uploads["ref_id"] in rows.nth(5).locator("a.profile-link").get_attribute("href")
    whole = rows.nth(0).locator("a", has_text="whole batch").get_attribute("href")
    assert f"profile={TS_3}" in whole and "segment" not in whole
    with page.expect_navigation():
        page.click("#open-selected")
    assert page.locator(".profile-card").count() == 3
    assert page.locator("#drift-table").is_visible()
    watched.check_clean()


def test_landing_and_error_pages(uploads, watched):
    page = watched.page
    server = uploads["server"]
    page.goto(server.url + "/")
    assert f'endpoint="{server.url}"' in page.locator("#snippet-writer").inner_text()
    page.click(f'a[href="/sessions/{uploads["session_id"]}"]')
    assert page.locator("#session-profiles").is_visible()
    response = page.goto(f"{server.url}/sessions/session-{'Z' * 24}")
    assert response.status == 404
    assert "session-" + "Z" * 24 in page.locator("#error-message").inner_text()
    # the error document itself is reported as a failed load; nothing else may fail
    assert all("404" in e for e in watched.errors), watched.errors
    watched.errors.clear()
    watched.check_clean()


def test_a_page_of_a_thousand_column_profile_draws_lazily_and_filters(tmp_path, watched):
    rng = np.random.default_rng(9)
    df = pd.DataFrame(rng.normal(size=(200, 1000)), columns=[f"feature_{i:04d}" for i in range(1000)])
    with LocalServer(data_dir=tmp_path / "data") as server:
        ok, url = why.log(df).writer("songbird").option(endpoint=server.url, config_dir=str(tmp_path / "c")).write()
        assert ok
        page = watched.page
        page.goto(url)
        page.wait_for_selector("[data-chart].js-plotly-plot")
        drawn = page.locator("[data-chart].js-plotly-plot").count()
        assert 0 < drawn < 50  # only the charts near the viewport
        last = page.locator('.column-card[data-column="feature_0099"] [data-chart]')
        last.scroll_into_view_if_needed()
        wait_until(page, "el => el.data && el.data.length === 1", arg=last.element_handle())
        assert page.locator("[data-chart].js-plotly-plot").count() < 60
        page.evaluate("window.scrollTo(0, 0)")
        page.fill("#column-filter", "0050")
        wait_until(page, "document.querySelectorAll('.column-card:not([hidden])').length === 1")
        only = page.locator('.column-card[data-column="feature_0050"] [data-chart]')
        wait_until(page, "el => el.data && el.data.length === 1", arg=only.element_handle())
        assert page.locator("#filter-count").inner_text() == "1 of 100 columns"  # the columns of this page
        watched.check_clean()
