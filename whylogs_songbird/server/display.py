"""Showing user-supplied text in the observatory pages: direction isolated, control characters visible.

Column names, values, aliases, segment tags and profile selectors come from whoever uploaded the
profile. An unterminated right-to-left override (U+202E) in one of them would reverse the rest of
its table cell and make neighbouring counts read wrong; a zero-width or control character would
hide part of a name. The Jinja filters here (registered by the observatory) escape the text, put
it in ``<bdi>`` (its own direction, isolated from its surroundings) and show every control and
formatting character as a visible ``U+XXXX`` badge instead of acting on it.
"""

from __future__ import annotations

import re

from markupsafe import Markup, escape

#: C0 and C1 controls, DEL, the bidirectional marks, embeddings, overrides and isolates, line and
#: paragraph separators, and the byte order mark / zero-width no-break space.
CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069\ufeff]")


def code_point(char: str) -> str:
    return f"U+{ord(char):04X}"


def visible_text(value: object) -> str:
    """Plain text with every control character replaced by ``<U+XXXX>`` (for places that hold no
    markup, such as the page title)."""
    return CONTROL_CHARACTERS.sub(lambda m: f"<{code_point(m.group())}>", "" if value is None else str(value))


def user_text(value: object) -> Markup:
    """User-supplied text as safe HTML: escaped, isolated in ``<bdi>``, control characters shown as badges."""
    text = "" if value is None else str(value)
    parts: list[str] = []
    last = 0
    for match in CONTROL_CHARACTERS.finditer(text):
        parts.append(str(escape(text[last : match.start()])))
        point = code_point(match.group())
        parts.append(f'<span class="ctl" title="control character {point}">{point}</span>')
        last = match.end()
    parts.append(str(escape(text[last:])))
    return Markup("<bdi>" + "".join(parts) + "</bdi>")  # noqa: S704 - every piece escaped above


__all__ = ["CONTROL_CHARACTERS", "user_text", "visible_text"]
