"""The page model: everything a profiles page shows, formatted once (and cached) from the
summaries, chart data and drift scores of its selections; plus the Jinja2 environment."""

from __future__ import annotations

import dataclasses
import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jinja2 import BytecodeCache, Environment, FileSystemLoader, select_autoescape
from jinja2.bccache import Bucket
from markupsafe import Markup
from whylogs.core import DatasetProfileView

from whylogs_songbird.column_stats import DRIFT_CATEGORIES, DriftScore, severity
from whylogs_songbird.models import MAX_PROFILES_PER_LINK
from whylogs_songbird.server.display import user_text, visible_text
from whylogs_songbird.server.observatory.base import COLUMNS_PER_PAGE, STAT_ROWS, TABLE_ITEMS, TEMPLATES_DIR
from whylogs_songbird.server.observatory.selection import Selection
from whylogs_songbird.server.summaries import ProfileSummary, chart_data


def _number(value: Any, digits: int = 6) -> str:
    """A number for a table cell: integers with thousands separators, floats to ``digits`` significant digits."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    number = float(value)
    if math.isnan(number):
        return "NaN"
    if math.isinf(number):
        return "∞" if number > 0 else "-∞"
    if number == int(number) and abs(number) < 1e15:
        return f"{int(number):,}"
    return f"{number:.{digits}g}"


def _percent(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value * 100:.2f}%" if value else "0%"


def _raw(value: Any) -> str:
    """The exact value for a ``data-value`` attribute."""
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _json_for_script(data: Any) -> Markup:
    """JSON safe to embed in ``<script type="application/json">`` (no ``</script>`` breakout)."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)  # noqa: S704 - escaped above for a script element


def _round_floats(values: Sequence[float], digits: int = 8) -> list[float]:
    return [float(f"{v:.{digits}g}") for v in values]


class _CompiledTemplates(BytecodeCache):
    """The compiled templates, kept in memory for every environment of the process: a server
    started after another one (tests, notebooks) does not parse and compile them again. Jinja
    checks each entry against the template's source, so an edited template is compiled afresh."""

    def __init__(self) -> None:
        self._code: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def load_bytecode(self, bucket: Bucket) -> None:
        with self._lock:
            code = self._code.get(bucket.key)
        if code is not None:
            bucket.bytecode_from_string(code)

    def dump_bytecode(self, bucket: Bucket) -> None:
        code = bucket.bytecode_to_string()
        with self._lock:
            self._code[bucket.key] = code


_COMPILED = _CompiledTemplates()


def make_environment() -> Environment:
    """The pages' Jinja environment (its filters and globals); a fresh one per app, whose
    templates compile once per process."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES_DIR),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
        bytecode_cache=_COMPILED,
    )
    env.filters["number"] = _number
    env.filters["percent"] = _percent
    env.filters["raw"] = _raw
    env.filters["user"] = user_text  # every user-supplied value: escaped, in <bdi>, controls visible
    env.filters["plain"] = visible_text  # the same where no markup goes (the page title)
    env.globals["MAX_PROFILES"] = MAX_PROFILES_PER_LINK
    return env


#: One table cell: (profile number, exact value for data-value, text shown, CSS class).
Cell = tuple[int, str, str, str]


@dataclass(frozen=True)
class ColumnCard:
    """Everything the page shows about one column, formatted once and cached."""

    index: int
    name: str
    types: tuple[str, ...]
    drift: str
    #: (profile number, category, algorithm) per comparison with a score
    badges: tuple[tuple[int, str, str], ...]
    #: (stat, label, cells) for each statistic some profile has
    rows: tuple[tuple[str, str, tuple[Cell, ...]], ...]
    #: per profile: (value, count text) pairs of its top items; empty when no profile has any
    items: tuple[tuple[int, tuple[tuple[str, str], ...]], ...]
    #: shown instead of the chart when the column's chart cannot be drawn (e.g. its range is too wide)
    chart_note: str = ""


@dataclass(frozen=True)
class DriftRow:
    column: str
    index: int
    drift: str
    #: per comparison: (profile number, category, algorithm, statistic raw, statistic text, measure raw,
    #: measure text) or None when the column could not be compared
    scores: tuple[tuple[int, str, str, str, str, str, str] | None, ...]


@dataclass(frozen=True)
class ColumnWindow:
    """Which columns a page shows: those matching ``filter`` (case-insensitive substring of the
    name), ``COLUMNS_PER_PAGE`` at a time; ``page`` counts from 1."""

    filter: str = ""
    page: int = 1
    per_page: int = COLUMNS_PER_PAGE

    def apply(self, columns: Sequence[str]) -> tuple[list[str], int, int]:
        """(the columns shown, the index of the first one among the matching, how many match)."""
        needle = self.filter.casefold()
        matching = [c for c in columns if needle in c.casefold()] if needle else list(columns)
        last_page = max(1, -(-len(matching) // self.per_page))
        page = min(max(1, self.page), last_page)
        start = (page - 1) * self.per_page
        return matching[start : start + self.per_page], start, len(matching)


@dataclass(frozen=True)
class PageModel:
    """The cached, formatted content of a profiles page (everything but the request's links)."""

    total_columns: int
    matching_columns: int
    first_column: int
    window: ColumnWindow
    cards: tuple[ColumnCard, ...]
    drift_rows: tuple[DriftRow, ...]
    drift_counts: tuple[dict[str, int], ...]
    drift_errors: tuple[str | None, ...]
    chart_json: Markup
    #: the drift table and the column cards, rendered once from ``_drift.html`` and ``_columns.html``
    drift_html: Markup = Markup("")
    columns_html: Markup = Markup("")

    @property
    def column_count(self) -> int:
        return len(self.cards)

    @property
    def paged(self) -> bool:
        """Whether some columns are not on this page (wide profile or a filter)."""
        return self.matching_columns > len(self.cards) or self.total_columns != self.matching_columns

    @property
    def page_number(self) -> int:
        return self.first_column // self.window.per_page + 1

    @property
    def page_count(self) -> int:
        return max(1, -(-self.matching_columns // self.window.per_page))


def _worst_category(scores: Sequence[DriftScore | None]) -> str:
    worst = min((severity(s.category) for s in scores if s is not None), default=len(DRIFT_CATEGORIES))
    return DRIFT_CATEGORIES[worst] if worst < len(DRIFT_CATEGORIES) else ""


def _category_label(category: str | None) -> str:
    return (category or "n/a").replace("_", " ").lower()


def all_columns(selections: Sequence[Selection]) -> list[str]:
    """The columns of a page: the first profile's order, then columns only the others have."""
    columns: list[str] = []
    seen: set[str] = set()
    for selection in selections:
        for name in selection.outline.names if selection.outline is not None else ():
            if name not in seen:
                seen.add(name)
                columns.append(name)
    return columns


def build_page_model(
    selections: Sequence[Selection],
    views: Sequence[DatasetProfileView],
    drift: Sequence[dict[str, DriftScore]],
    drift_errors: Sequence[str | None],
    env: Environment | None = None,
    window: ColumnWindow | None = None,
) -> PageModel:
    """Format the columns, drift table and chart data of a profiles page; with ``env``, also render
    the drift table and column cards (they depend only on the profiles, so they are cached).

    Only the columns in ``window`` (default: the first ``COLUMNS_PER_PAGE``) get cards, charts
    and drift rows, so a very wide profile gives a page of bounded size."""
    summaries = [s.summary or ProfileSummary() for s in selections]
    numbers = [s.number for s in selections]
    everything = all_columns(selections)
    the_window = window or ColumnWindow()
    columns, first, matching = the_window.apply(everything)

    cards = []
    charts: dict[str, Any] = {}
    for index, name in enumerate(columns, start=first):
        found = [summary.columns.get(name) for summary in summaries]
        scores = [d.get(name) for d in drift]
        rows: list[tuple[str, str, tuple[Cell, ...]]] = [
            (
                "inferred_type",
                "Inferred type",
                tuple(
                    (n, c.inferred_type if c else "", c.inferred_type if c else "absent", "" if c else "muted")
                    for n, c in zip(numbers, found)
                ),
            )
        ]
        for stat, label, fmt in STAT_ROWS:
            values = [getattr(c, stat) if c is not None else None for c in found]
            if all(v is None for v in values):
                continue
            cells = tuple(
                (n, _raw(v), _percent(v) if fmt == "percent" else _number(v), "" if v is not None else "muted")
                for n, v in zip(numbers, values)
            )
            rows.append((stat, label, cells))
        items: tuple[tuple[int, tuple[tuple[str, str], ...]], ...] = ()
        if any(c is not None and c.frequent_items for c in found):
            items = tuple(
                (n, tuple((i.value, _number(i.estimate)) for i in c.frequent_items[:TABLE_ITEMS]) if c else ())
                for n, c in zip(numbers, found)
            )
        data = chart_data(name, views, summaries)
        chart_note = ""
        if data is not None:
            if data["kind"] == "note":
                chart_note = data["note"]
            else:
                if data["kind"] == "histogram":
                    data["edges"] = _round_floats(data["edges"])
                else:
                    data["totals"] = [c.count if c is not None else None for c in found]
                charts[str(index)] = data
        cards.append(
            ColumnCard(
                index=index,
                name=name,
                types=tuple(dict.fromkeys(c.inferred_type for c in found if c is not None)),
                drift=_worst_category(scores),
                badges=tuple(
                    (n, score.category or "", score.algorithm)
                    for n, score in zip(numbers[1:], scores)
                    if score is not None
                ),
                rows=tuple(rows),
                items=items,
                chart_note=chart_note,
            )
        )

    drift_rows = []
    for card in cards:
        scores = [d.get(card.name) for d in drift]
        present = [s for s in scores if s is not None]
        if not present:
            continue
        worst = min(s.severity for s in present)
        formatted = tuple(
            None
            if s is None
            else (
                n,
                s.category or "",
                s.algorithm,
                _raw(s.statistic),
                _number(s.statistic, 4),
                _raw(s.pvalue if s.pvalue is not None else s.statistic),
                f"p = {_number(s.pvalue, 3)}" if s.pvalue is not None else f"d = {_number(s.statistic, 4)}",
            )
            for n, s in zip(numbers[1:], scores)
        )
        drift_rows.append((worst, card.name, DriftRow(card.name, card.index, card.drift, formatted)))
    drift_rows.sort(key=lambda row: (row[0], row[1]))

    payload = {
        "profiles": [{"label": f"{s.number}. {s.title}", "color": s.color} for s in selections],
        "charts": charts,
    }
    counts = tuple(
        {category: sum(1 for score in d.values() if score.category == category) for category in DRIFT_CATEGORIES}
        for d in drift
    )
    model = PageModel(
        total_columns=len(everything),
        matching_columns=matching,
        first_column=first,
        window=the_window,
        cards=tuple(cards),
        drift_rows=tuple(row for _, _, row in drift_rows),
        drift_counts=counts,
        drift_errors=tuple(drift_errors),
        chart_json=_json_for_script(payload),
    )
    if env is None:
        return model
    context = {"selections": selections, "page": model}
    return dataclasses.replace(
        model,
        drift_html=Markup(env.get_template("_drift.html").render(context)),  # noqa: S704 - autoescaped template
        columns_html=Markup(env.get_template("_columns.html").render(context)),  # noqa: S704 - autoescaped template
    )
