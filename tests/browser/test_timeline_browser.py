"""The timeline page in a real headless browser (Playwright driving Debian's chromium).

A reference and 30 daily batches (one column shifts from day 20) go through the songbird writer to
a LocalServer. The heatmap must flag the shifted column from day 20, a cell click must open the
comparison of the reference and that day, the series charts must be drawn, the filter must narrow the
rows, and the page must log no console error and request nothing from any host but 127.0.0.1.
The screenshot goes to a temporary directory, or into ``$SONGBIRD_SCREENSHOTS_DIR`` when set
(``scripts/screenshots`` refreshes ``docs/img/timeline.png`` that way).
"""

from __future__ import annotations

import os

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")  # before anything imports whylogs

from pathlib import Path  # noqa: E402
from urllib.parse import parse_qs, urlsplit  # noqa: E402

import playwright_helpers  # noqa: E402
import pytest  # noqa: E402
import whylogs as why  # noqa: E402
from playwright_helpers import Watched, needs_chromium, wait_until  # noqa: E402
from timeline_data import DAY_MS, DAYS, SHIFT_DAY, SHIFTED, START_MS, day_frame, reference_frame  # noqa: E402

import whylogs_songbird  # noqa: E402
from whylogs_songbird.server import LocalServer  # noqa: E402

pytestmark = needs_chromium
browser = playwright_helpers.browser  # the shared fixture
screenshots = playwright_helpers.screenshots  # the shared fixture
STAMP_HOUR = 6 * 3_600_000


def publish_daily(server: LocalServer, config: Path) -> dict:
    """The reference and the 30 daily batches; returns the session and reference ids."""
    refs = whylogs_songbird.publish_references(
        {"training": why.log(reference_frame())}, endpoint=server.url, config_dir=str(config)
    )
    for day in range(DAYS):
        ok, _ = (
            why.log(day_frame(day))
            .writer("songbird")
            .option(endpoint=server.url, config_dir=str(config), dataset_timestamp=START_MS + day * DAY_MS + STAMP_HOUR)
            .write()
        )
        assert ok
    return {"session_id": refs.session_id, "ref_id": refs.profiles[0].profile_id}


@pytest.fixture(scope="module")
def daily(tmp_path_factory: pytest.TempPathFactory, shared_sandbox):
    root = tmp_path_factory.mktemp("timeline-browser")
    with LocalServer(data_dir=root / "data", list_sessions=True, sandbox=shared_sandbox) as server:
        yield {"server": server, **publish_daily(server, root / "config")}


@pytest.fixture
def watched(browser):
    """A 1400×1000 tab (the heatmap and the series side by side), closed after the test."""
    tab = Watched(browser, width=1400, height=1000)
    yield tab
    tab.close()


def wait_for_series(page) -> None:
    for kind in ("band", "count", "drift", "items"):
        chart = page.locator(f'[data-series="{kind}"]')
        wait_until(
            page,
            "el => el.classList.contains('chart-empty') || (el.data && el.data.length > 0)",
            chart.element_handle(),
        )


def test_heatmap_flags_the_shift_and_a_cell_opens_the_comparison(daily, watched, screenshots) -> None:
    page = watched.page
    server, sid = daily["server"], daily["session_id"]
    page.goto(f"{server.url}/sessions/{sid}/timeline?granularity=day")
    rows = page.locator("#heatmap tbody tr")
    assert rows.count() == 4
    assert rows.nth(0).get_attribute("data-column") == SHIFTED  # most drifted first
    cells = rows.nth(0).locator("td")
    assert cells.count() == DAYS
    classes = [cells.nth(i).get_attribute("class") for i in range(DAYS)]
    assert classes[SHIFT_DAY:] == ["hD"] * (DAYS - SHIFT_DAY)
    assert "hD" not in classes[:SHIFT_DAY]

    wait_for_series(page)  # the most drifted column's series, from the JSON API
    assert page.locator("#series-column").input_value() == SHIFTED
    band = page.evaluate("() => document.querySelector('[data-series=band]').data.map(t => t.y.length)")
    assert band == [DAYS] * 4
    shot = screenshots / "timeline.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000, f"{shot} holds a picture of the page"

    # the filter narrows the rows, as on the profiles pages
    page.fill("#column-filter", "inc")
    wait_until(page, "document.querySelectorAll('#heatmap tbody tr:not([hidden])').length === 1")
    assert page.locator("#filter-count").inner_text() == "1 of 4 columns"
    page.fill("#column-filter", "")
    page.check("#only-drifted")
    wait_until(page, "document.querySelectorAll('#heatmap tbody tr:not([hidden])').length === 1")
    page.uncheck("#only-drifted")
    watched.check_clean()

    # a cell opens the comparison page of the reference and that day
    day = SHIFT_DAY + 3
    with page.expect_navigation():
        cells.nth(day).click()
    parts = urlsplit(page.url)
    assert parts.path == "/resources/model-1/profiles"
    query = parse_qs(parts.query)
    assert query["profile"] == [daily["ref_id"], str(START_MS + day * DAY_MS + STAMP_HOUR)]
    assert query["sessionToken"] == [sid]
    assert page.locator(".profile-card").count() == 2
    drift_cell = page.locator(f'#drift-table tr[data-column="{SHIFTED}"] td[data-compare="2"][data-drift-category]')
    assert drift_cell.get_attribute("data-drift-category") == "DRIFT"
    watched.check_clean()


def test_series_follow_the_picked_column_and_the_form_switches_granularity(daily, watched) -> None:
    page = watched.page
    server, sid = daily["server"], daily["session_id"]
    page.goto(f"{server.url}/sessions/{sid}/timeline")
    wait_for_series(page)
    page.locator('#heatmap tbody tr[data-column="color"] th').click()
    wait_until(
        page,
        "() => { const el = document.querySelector('[data-series=items]'); return el.data && el.data.length === 5; }"
    )  # distinct, and the share of each of the four colors
    assert page.locator('[data-series="band"]').inner_text().startswith("No distribution")
    with page.expect_navigation():
        page.select_option("#granularity", "week")
    assert parse_qs(urlsplit(page.url).query)["granularity"] == ["week"]
    assert page.locator("#heatmap thead th.hm-bucket").count() == 5  # 30 days from a Monday: 5 ISO weeks
    wait_for_series(page)
    watched.check_clean()


def test_session_and_landing_pages_link_the_timeline(daily, watched) -> None:
    page = watched.page
    server, sid = daily["server"], daily["session_id"]
    page.goto(f"{server.url}/")
    with page.expect_navigation():
        page.locator(f'tr[data-session="{sid}"] a.timeline-link').click()
    assert urlsplit(page.url).path == f"/sessions/{sid}/timeline"
    page.goto(f"{server.url}/sessions/{sid}")
    with page.expect_navigation():
        page.click("#timeline-link")
    assert page.locator("#heatmap").count() == 1
    watched.check_clean()


def test_a_day_with_p_zero_is_drawn_at_the_floor_not_left_out(tmp_path, watched) -> None:
    """Issue 22 item 9: on the log-scale p-value chart, p = 0 (a drift so large the p-value
    underflows) is drawn at 1e-16 with a downward triangle and "p < 1e-16", not dropped."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    with LocalServer(data_dir=tmp_path / "data") as server:
        config = str(tmp_path / "config")
        refs = whylogs_songbird.publish_references(
            {"training": why.log(pd.DataFrame({"x": rng.normal(0, 1, 5000)}))}, endpoint=server.url, config_dir=config
        )
        for day, shift in ((0, 0), (1, 0), (2, 1000)):
            ok, _ = (
                why.log(pd.DataFrame({"x": rng.normal(shift, 1, 5000)}))
                .writer("songbird")
                .option(endpoint=server.url, config_dir=config, dataset_timestamp=START_MS + day * DAY_MS)
                .write()
            )
            assert ok
        page = watched.page
        page.goto(f"{server.url}/sessions/{refs.session_id}/timeline?granularity=day")
        wait_for_series(page)
        drift = page.locator('[data-series="drift"]').element_handle()
        trace = page.evaluate(
            "el => ({y: el.data[0].y, text: el.data[0].text, symbol: el.data[0].marker.symbol})", drift
        )
        assert trace["y"][2] == 1e-16 and trace["text"][2] == "p < 1e-16" and trace["symbol"][2] == "triangle-down"
        assert all(0 < y <= 1 for y in trace["y"]), "every day has a point on the log axis"
        assert trace["symbol"][:2] == ["circle", "circle"] and trace["text"][0].startswith("p = ")
        notes = page.evaluate("el => el.layout.annotations.map(a => a.text)", drift)
        assert notes == ["p < 1e-16 (p = 0) drawn here"]
        watched.check_clean()
