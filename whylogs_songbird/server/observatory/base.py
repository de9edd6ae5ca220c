"""Shared bits of the observatory: where templates and static files are, colors, and the
:class:`PageError` every page turns into an HTML error page."""

from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import TypeVar

_HERE = Path(__file__).parent.parent
TEMPLATES_DIR = _HERE / "templates"
STATIC_DIR = _HERE / "static"
#: Colors of profile 1, 2 and 3 in headers and charts.
PROFILE_COLORS = ("#3b6fb6", "#e07b24", "#3a9a5b")
#: Frequent items listed in a column's table.
TABLE_ITEMS = 5
#: Sessions listed on the landing page.
RECENT_SESSIONS = 20
#: Column cards per profiles page; wider profiles are paged (see ``page.ColumnWindow``). Cards,
#: charts and drift are built for the columns shown, so a first view costs about this many columns.
COLUMNS_PER_PAGE = 100
#: The longest column filter a page accepts.
MAX_COLUMN_FILTER = 200
MAX_SELECTOR_SHOWN = 80

#: The statistic rows of a column's table: (ColumnSummary attribute, label, format).
STAT_ROWS = (
    ("count", "Count", "number"),
    ("null_count", "Nulls", "number"),
    ("null_fraction", "Null fraction", "percent"),
    ("distinct", "Distinct (est.)", "number"),
    ("mean", "Mean", "number"),
    ("stddev", "Std dev", "number"),
    ("min", "Min", "number"),
    ("p25", "25th percentile", "number"),
    ("median", "Median", "number"),
    ("p75", "75th percentile", "number"),
    ("max", "Max", "number"),
)

CacheKey = tuple[Hashable, ...]
T = TypeVar("T")


class PageError(Exception):
    """A request the pages cannot answer; rendered as an HTML error page with this status."""

    def __init__(
        self,
        status: int,
        title: str,
        message: str,
        *,
        session_id: str | None = None,
        home: tuple[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message
        self.session_id = session_id
        #: (path, name) of the page to go back to, for a dataset's pages (a session's is ``session_id``)
        self.home = home


def shown(value: str) -> str:
    """A user-supplied value, shortened for an error message (the template escapes it)."""
    return value if len(value) <= MAX_SELECTOR_SHOWN else value[:MAX_SELECTOR_SHOWN] + "…"
