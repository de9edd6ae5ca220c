"""Reading the observatory's HTML in tests: the fields a page marks with ``data-field``, and pages
that are pending a moment."""

import html
import re
import time

import requests


def header_field(text, profile, field):
    block = re.search(r'<article class="profile-card" id="profile-' + str(profile) + r'".*?</article>', text, re.S)
    assert block
    element = re.search(r'<(dd|span)(\b[^>]*\bdata-field="' + field + r'"[^>]*)>(.*?)</\1>', block.group(0), re.S)
    assert element, f"no {field} in the header of profile {profile}"
    value = re.search(r'data-value="([^"]*)"', element.group(2))
    shown = html.unescape(re.sub(r"<[^>]+>", "", element.group(3))).strip()
    return html.unescape(value.group(1)) if value else "", shown


def settled_page(url, *, timeout=120.0, **options):
    """GET ``url`` until it stops answering 202 (a profile not received yet, or still being
    summarised: the page would reload itself) and return that answer."""
    deadline = time.monotonic() + timeout
    while (page := requests.get(url, timeout=60, **options)).status_code == 202:
        assert time.monotonic() < deadline, f"still pending: {page.text[:300]}"
        time.sleep(0.2)
    return page
