"""Hardening in a real browser (headless Debian chromium): the Content-Security-Policy holds on every
page without a single violation, and user-supplied text with direction overrides stays in its place."""

import os

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")  # before anything imports whylogs

import pandas as pd  # noqa: E402
import playwright_helpers  # noqa: E402
import pytest  # noqa: E402
import whylogs as why  # noqa: E402
from playwright_helpers import needs_chromium, wait_until  # noqa: E402

import whylogs_songbird  # noqa: E402
from whylogs_songbird.server import LocalServer  # noqa: E402

pytestmark = needs_chromium
browser = playwright_helpers.browser  # the shared fixture
RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE, never terminated in the values below
TS_1, TS_2 = 1_700_086_400_000, 1_700_172_800_000
#: Records CSP violations in the page (an init script runs through the DevTools protocol, not subject to CSP).
RECORD_VIOLATIONS = """
window.__violations = [];
document.addEventListener('securitypolicyviolation',
    e => window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));
"""


def frame(n=300, shift=0):
    return pd.DataFrame(
        {
            f"{RLO}price": [float(i % 50 + shift) for i in range(n)],
            "city": [f"abc{RLO}123" if i % 3 == 0 else "Paris" for i in range(n)],
            "plain": [i for i in range(n)],
        }
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory, shared_sandbox):
    root = tmp_path_factory.mktemp("hardening-browser")
    with LocalServer(data_dir=root / "data", list_sessions=True, sandbox=shared_sandbox) as server:
        cfg = str(root / "config")
        refs = whylogs_songbird.publish_references(
            {f"base{RLO}line": why.log(frame())}, endpoint=server.url, config_dir=cfg
        )
        ok1, url1 = (
            why.log(frame()).writer("songbird").option(endpoint=server.url, config_dir=cfg, dataset_timestamp=TS_1)
        ).write()
        ok2, _ = (
            why.log(frame(shift=20))
            .writer("songbird")
            .option(endpoint=server.url, config_dir=cfg, dataset_timestamp=TS_2)
            .write()
        )
        assert refs.ok and ok1 and ok2
        yield {"server": server, "session_id": refs.session_id, "ref_id": refs.profiles[0].profile_id, "url": url1}


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(RECORD_VIOLATIONS)
    tab = context.new_page()
    tab.console_errors = []
    tab.on("console", lambda msg: tab.console_errors.append(msg.text) if msg.type == "error" else None)
    yield tab
    context.close()


def test_no_page_breaks_the_content_security_policy_and_inline_script_is_blocked(site, page):
    server, sid = site["server"], site["session_id"]
    compare = (
        f"{server.url}/resources/model-1/profiles?profile={site['ref_id']}&profile={TS_1}&profile={TS_2}"
        f"&sessionToken={sid}"
    )
    pages = [server.url + "/", f"{server.url}/sessions/{sid}", site["url"], compare]
    for url in pages:
        response = page.goto(url)
        assert response.status == 200, url
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        if "/resources/" in url:  # the charts draw, with plotly.js, under the policy
            chart = page.locator("[data-chart]").first
            chart.scroll_into_view_if_needed()
            wait_until(page, "el => el.data && el.data.length > 0", chart.element_handle())
        assert page.evaluate("window.__violations") == [], url
    assert page.console_errors == []
    # the policy is really in force: a script injected into the page does not run
    ran = page.evaluate(
        """() => { const s = document.createElement('script'); s.textContent = 'window.__ran = true';
                   document.body.appendChild(s); return window.__ran === true; }"""
    )
    assert ran is False
    wait_until(page, "window.__violations.length > 0")
    assert page.evaluate("window.__violations")[0].startswith("script-src")
    # an error page too
    response = page.goto(f"{server.url}/sessions/session-{'Z' * 24}")
    assert response.status == 404 and page.evaluate("window.__violations") == []


def test_direction_overrides_stay_inside_their_value_and_are_shown(site, page):
    page.goto(site["url"])
    card = page.locator(".column-card").filter(has=page.locator("h3", has_text="price"))
    name = card.locator("h3.column-name")
    assert name.locator("bdi").count() == 1
    assert name.locator("bdi").evaluate("el => getComputedStyle(el).unicodeBidi") == "isolate"
    assert name.locator(".ctl").inner_text() == "U+202E"  # shown, not obeyed
    assert RLO not in name.inner_text()
    # a value with an override in the most-frequent list: its count stays to its right, in its own cell
    city = page.locator('.column-card[data-column="city"] tr[data-stat="frequent_items"] td[data-profile="1"]')
    items = city.locator(".item")
    texts = [items.nth(i).locator(".item-value").inner_text() for i in range(items.count())]
    assert any("U+202E" in t for t in texts), texts
    for i in range(items.count()):
        value_box = items.nth(i).locator(".item-value").bounding_box()
        count_box = items.nth(i).locator(".item-count").bounding_box()
        assert count_box["x"] >= value_box["x"] + value_box["width"] - 1
        assert items.nth(i).locator(".item-count").inner_text().replace(",", "").isdigit()
    # the rows after the column still read left to right
    assert page.locator(
        '.column-card[data-column="plain"] tr[data-stat="count"] td[data-profile="1"]'
    ).inner_text() == ("300")


def test_aliases_and_session_rows_are_isolated_too(site, page):
    server, sid = site["server"], site["session_id"]
    page.goto(f"{server.url}/sessions/{sid}")
    alias_cell = page.locator(f'tr[data-upload="{site["ref_id"]}"] td.wrap').first
    assert alias_cell.locator("bdi .ctl").inner_text() == "U+202E"
    assert alias_cell.inner_text().startswith("base")
    page.goto(f"{server.url}/resources/model-1/profiles?profile={site['ref_id']}&sessionToken={sid}")
    title = page.locator(".profile-card .card-title")
    assert title.locator("bdi").count() == 1 and "U+202E" in title.inner_text()
    assert RLO not in page.title() and "<U+202E>" in page.title()
