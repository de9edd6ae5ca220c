"""Reading the observatory's HTML in tests: the fields a page marks with ``data-field``."""

import html
import re


def header_field(text, profile, field):
    block = re.search(r'<article class="profile-card" id="profile-' + str(profile) + r'".*?</article>', text, re.S)
    assert block
    element = re.search(r'<(dd|span)(\b[^>]*\bdata-field="' + field + r'"[^>]*)>(.*?)</\1>', block.group(0), re.S)
    assert element, f"no {field} in the header of profile {profile}"
    value = re.search(r'data-value="([^"]*)"', element.group(2))
    shown = html.unescape(re.sub(r"<[^>]+>", "", element.group(3))).strip()
    return html.unescape(value.group(1)) if value else "", shown
