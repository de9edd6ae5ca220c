"""The session page's list of profiles: its query parameters (order, filters, page), read and
checked into a :class:`~whylogs_songbird.server.storage.paging.ProfileQuery`, and the links that
page through it. Every control is a plain link or GET form, so the page works without JavaScript.

Parameters (all optional): ``sort`` (``uploaded``, ``timestamp``, ``alias``: kind then alias),
``order`` (``asc``, ``desc``), ``kind`` (``batch``, ``reference``), ``segment`` (a segment label,
as :func:`~whylogs_songbird.server.common.segment_label` writes it), ``q`` (text the alias holds),
``limit`` (rows per page, 1 to :data:`MAX_ROWS`) and one of ``after``/``before`` (a cursor this
page made: the rows after or before it). A bad value is a 400 page that says what to give.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from whylogs_songbird.server.observatory.base import PageError, shown
from whylogs_songbird.server.storage.paging import SORTS, Cursor, ProfileQuery, cursor_is_valid

if TYPE_CHECKING:
    from whylogs_songbird.server.store import Store

#: Rows per page unless ``limit`` says otherwise, and the most it may say: with every user value
#: shown shortened (see :data:`SHOWN_CHARS`) a page stays within a few hundred kB.
DEFAULT_ROWS = 50
MAX_ROWS = 100
#: The longest alias filter, segment filter and cursor accepted.
MAX_TEXT_FILTER = 200
MAX_SEGMENT_FILTER = 4096
MAX_CURSOR = 2048
#: A segment label longer than this is shown shortened in the list (its profile's page shows it whole).
SHOWN_CHARS = 160
#: The order each sort has unless ``order`` says otherwise.
DEFAULT_ORDER = {"uploaded": "desc", "timestamp": "desc", "alias": "asc"}
SORT_LABELS = {"uploaded": "upload time", "timestamp": "dataset timestamp", "alias": "kind, then alias"}
#: The parameters that choose which rows (kept by every link of the page).
FILTER_PARAMS = ("sort", "order", "kind", "segment", "q", "limit")
#: The pages count each kind of a session's profiles up to this many (an index walk bounded by it,
#: so a page costs the same however many the session holds) and say "more than 10,000" past it.
COUNTED_PROFILES = 10_000


@dataclass(frozen=True)
class ListParams:
    """The list's parameters as given (checked), to rebuild links from."""

    sort: str = "uploaded"
    order: str = "desc"
    kind: str = ""
    segment: str = ""
    q: str = ""
    limit: int = DEFAULT_ROWS
    after: str = ""
    before: str = ""

    @property
    def filtered(self) -> bool:
        return bool(self.kind or self.segment or self.q)

    def link(self, home: str, **changes: str | int) -> str:
        """A link to the list page at path ``home`` (a session's or a dataset's) with these parameters
        (defaults left out), ``changes`` applied."""
        params = replace(self, **changes)  # type: ignore[arg-type]
        pairs: list[tuple[str, str]] = []
        if params.sort != "uploaded":
            pairs.append(("sort", params.sort))
        if params.order != DEFAULT_ORDER[params.sort]:
            pairs.append(("order", params.order))
        for name in ("kind", "segment", "q"):
            value = getattr(params, name)
            if value:
                pairs.append((name, value))
        if params.limit != DEFAULT_ROWS:
            pairs.append(("limit", str(params.limit)))
        for name in ("after", "before"):
            value = getattr(params, name)
            if value:
                pairs.append((name, value))
        return home + (f"?{urlencode(pairs)}" if pairs else "")

    def sorted_by(self, home: str, sort: str) -> str:
        """A link to the first page in order ``sort`` (the other way round when it is the current one)."""
        if sort == self.sort:
            order = "asc" if self.order == "desc" else "desc"
        else:
            order = DEFAULT_ORDER[sort]
        return self.link(home, sort=sort, order=order, after="", before="")


def _bad(back: Mapping[str, Any], title: str, message: str) -> PageError:
    return PageError(400, title, message, **back)


def encode_cursor(sort: str, cursor: Cursor) -> str:
    """A page's cursor as a link parameter (URL-safe base64 of its JSON, with its sort)."""
    text = json.dumps([sort, *cursor], separators=(",", ":"), ensure_ascii=False)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(sort: str, token: str) -> Cursor | None:
    """The cursor of ``sort`` a link parameter holds, or None when it is not one this page made."""
    if len(token) > MAX_CURSOR or not token.isascii():
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        return None
    if not isinstance(data, list) or not data or data[0] != sort or not cursor_is_valid(sort, data[1:]):
        return None
    return tuple(data[1:])


def parse_segment_label(label: str) -> tuple[tuple[str, str], ...] | None:
    """The tags a segment label names (``key=value,key=value``, parts quoted as ``segment_label``
    quotes them), or None when it is not a label."""
    tags: list[tuple[str, str]] = []
    parts: list[str] = []
    i, n = 0, len(label)
    while True:
        if i < n and label[i] == '"':  # a quoted part: \" and \\ inside
            i += 1
            chars: list[str] = []
            while i < n and label[i] != '"':
                if label[i] == "\\":
                    if i + 1 >= n or label[i + 1] not in '"\\':
                        return None
                    i += 1
                chars.append(label[i])
                i += 1
            if i >= n:
                return None
            i += 1
            parts.append("".join(chars))
        else:
            start = i
            while i < n and label[i] not in ',="\\':
                i += 1
            parts.append(label[start:i])
        if len(parts) == 1:
            if i >= n or label[i] != "=":
                return None
            i += 1
            continue
        tags.append((parts[0], parts[1]))
        parts = []
        if i == n:
            return tuple(tags)
        if label[i] != ",":
            return None
        i += 1


def read_params(back: Mapping[str, Any], query: Mapping[str, str]) -> tuple[ListParams, ProfileQuery]:
    """The list's parameters of a request, checked: a 400 :class:`PageError` (with ``back``, its way
    back to the list's owner) says what to give."""
    sort = query.get("sort") or "uploaded"
    if sort not in SORTS:
        raise _bad(
            back,
            "Unknown sort",
            f"sort={shown(sort)!r} is not an order of this list: give sort=uploaded, sort=timestamp or sort=alias.",
        )
    order = query.get("order") or DEFAULT_ORDER[sort]
    if order not in ("asc", "desc"):
        raise _bad(back, "Unknown order", f"order={shown(order)!r} is not an order: give order=asc or order=desc.")
    kind = query.get("kind") or ""
    if kind not in ("", "batch", "reference"):
        raise _bad(
            back,
            "Unknown kind",
            f"kind={shown(kind)!r} is not a kind of profile: give kind=batch or kind=reference (or none for both).",
        )
    raw_limit = query.get("limit") or str(DEFAULT_ROWS)
    limit = int(raw_limit) if raw_limit.isascii() and raw_limit.isdigit() and len(raw_limit) <= 4 else 0
    if not 1 <= limit <= MAX_ROWS:
        raise _bad(
            back,
            "Bad page size",
            f"limit={shown(raw_limit)!r} is not a page size: give a whole number of rows from 1 to {MAX_ROWS}.",
        )
    text = query.get("q") or ""
    if len(text) > MAX_TEXT_FILTER:
        raise _bad(
            back,
            "Alias filter too long",
            f"The alias filter q is {len(text):,} characters; give at most {MAX_TEXT_FILTER}.",
        )
    segment = query.get("segment") or ""
    tags = None
    if segment:
        tags = parse_segment_label(segment) if len(segment) <= MAX_SEGMENT_FILTER else None
        if tags is None:
            raise _bad(
                back,
                "Bad segment filter",
                f"segment={shown(segment)!r} is not a segment label: give key=value pairs joined by commas, as the "
                'list shows them (a key or value holding , = " or \\ is quoted), at most '
                f"{MAX_SEGMENT_FILTER:,} characters.",
            )
    after, before = query.get("after") or "", query.get("before") or ""
    if after and before:
        raise _bad(
            back,
            "Bad page link",
            "The link gives both after= and before=: give one of them, or neither for the first page.",
        )
    cursors: dict[str, Cursor | None] = {"after": None, "before": None}
    for name, token in (("after", after), ("before", before)):
        if token:
            cursors[name] = decode_cursor(sort, token)
            if cursors[name] is None:
                raise _bad(
                    back,
                    "Bad page link",
                    f"{name}={shown(token)!r} is not a position in this list sorted by {sort}: follow the list's own "
                    "Previous/Next links, or open its first page.",
                )
    params = ListParams(sort, order, kind, segment, text, limit, after, before)
    profile_query = ProfileQuery(
        sort=sort,
        descending=order == "desc",
        limit=limit,
        kind=kind or None,
        segment_tags=tags,
        text=text,
        after=cursors["after"],
        before=cursors["before"],
    )
    return params, profile_query


@dataclass(frozen=True)
class ProfileCounts:
    """A session's profiles by kind as its pages show them: exact up to ``bound`` a kind, "more
    than" past it."""

    batch: int
    reference: int
    bound: int = COUNTED_PROFILES

    @classmethod
    def of(cls, store: Store, session_id: str, bound: int = COUNTED_PROFILES) -> ProfileCounts:
        """The session's counts, each kind counted one past ``bound`` (no further)."""
        found = store.profile_counts(session_id, at_most=bound + 1)
        return cls(found["batch"], found["reference"], bound)

    @property
    def more(self) -> bool:
        """Whether a kind holds more than the bound (so the total is a lower bound)."""
        return max(self.batch, self.reference) > self.bound

    @property
    def total(self) -> int:
        """The profiles counted: every profile, or (when :attr:`more`) the least the session holds."""
        return min(self.batch, self.bound) + min(self.reference, self.bound)

    def shown(self, what: str) -> str:
        """``batch``, ``reference`` or ``total`` as a page writes it: "1,234" or "more than 10,000"."""
        if what == "total":
            return f"more than {self.total:,}" if self.more else f"{self.total:,}"
        n = self.batch if what == "batch" else self.reference
        return f"more than {self.bound:,}" if n > self.bound else f"{n:,}"


def shortened(text: str, limit: int = SHOWN_CHARS) -> str:
    """``text``, cut to ``limit`` characters with an ellipsis."""
    return text if len(text) <= limit else text[:limit] + "…"


__all__ = [
    "COUNTED_PROFILES",
    "DEFAULT_ROWS",
    "MAX_ROWS",
    "ListParams",
    "ProfileCounts",
    "decode_cursor",
    "encode_cursor",
    "parse_segment_label",
    "read_params",
    "shortened",
]
