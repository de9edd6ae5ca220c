"""Pages of a session's profiles (the session page): keyset pagination in SQL.

A page is the next ``limit`` profiles after (or before) a *cursor*, the sort key of a row the
reader saw, in one of three orders (:data:`SORTS`): when they were uploaded, their dataset
timestamp, or kind then alias; ties are broken by id, so the order is total. Each order has a
partial index over the session's profiles (:data:`PAGING_INDEXES`), so a page reads about
``limit`` index entries and rows whatever the size of the session, and never an offset's worth:
rows added or removed while someone pages move no other row from one page to the next (no
duplicate, no gap). A cursor is only ever compared with index seeks (see ``_page_rows``).
Filters (kind, segment, alias text) narrow the same walk; on PostgreSQL an alias text filter
that few profiles meet is answered from a trigram index instead (:func:`alias_text_index`).

:meth:`ProfilePagingSql.profile_counts` counts a session's profiles by kind from the index alone, up
to a bound (a page's cost stays that of the bound, however large the session).

A mixin of :class:`~whylogs_songbird.server.storage.sql.SqlMetadataStore`: it uses its ``_query``
and ``_upload_row``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from whylogs_songbird.server.storage.base import UploadRecord, is_valid_id

#: What a profile is, in every statement here (and in the partial indexes, which must say the same).
#: ``kind IN (...)`` is true of every row (a CHECK says so); it is there so that only statements that
#: say it too may use these indexes: SQLite's planner, without statistics, would otherwise walk a
#: whole session in upload order for the upload path's lookup of a duplicate (``kind = 'batch' AND
#: dataset_timestamp = ? ... ORDER BY stored_at, id``), where ``uploads_by_session`` finds it at once.
PROFILE_ROWS = (
    "kind IN ('batch', 'reference') AND stored_at IS NOT NULL AND duplicate_of IS NULL AND deleted_at IS NULL"
)
#: A dataset timestamp sorts as this when there is none (a reference without one): before every other.
NO_TIMESTAMP = -9223372036854775807

SortName = Literal["uploaded", "timestamp", "alias"]
#: The sort keys of each order (SQL expressions, spelled exactly as in their index), then ``id``.
SORTS: dict[str, tuple[str, ...]] = {
    "uploaded": ("stored_at",),
    "timestamp": (f"COALESCE(dataset_timestamp, {NO_TIMESTAMP})",),
    "alias": ("kind", "COALESCE(alias, '')"),
}

#: What the alias filter (``ProfileQuery.text``) looks in: the lower-cased alias, "" for none
#: (spelled exactly as in :func:`alias_text_index`).
ALIAS_TEXT = "LOWER(COALESCE(alias, ''))"

PAGING_INDEXES = (
    f"CREATE INDEX IF NOT EXISTS session_page_by_uploaded ON uploads (session_id, stored_at, id) WHERE {PROFILE_ROWS}",
    "CREATE INDEX IF NOT EXISTS session_page_by_timestamp ON uploads"
    f" (session_id, (COALESCE(dataset_timestamp, {NO_TIMESTAMP})), id) WHERE {PROFILE_ROWS}",
    "CREATE INDEX IF NOT EXISTS session_page_by_alias ON uploads"
    f" (session_id, kind, (COALESCE(alias, '')), id) WHERE {PROFILE_ROWS}",
)


def alias_text_index(trigram_ops: str) -> str:
    """PostgreSQL only: a trigram index (the ``pg_trgm`` extension's ``gin_trgm_ops``, named here
    with its schema) of every profile's :data:`ALIAS_TEXT`. A ``LIKE '%text%'`` of three
    characters or more then reads the entries of the profiles whose alias may hold the text (in
    any session), not the session's every row: a filter that matches nothing, or few, costs the
    same whatever the session's size. The planner chooses: a filter that matches many walks a
    paging index in the page's order and stops at the page's end; a shorter text has no trigram
    to look up, and walks it too. Rows found are checked against the ``LIKE`` itself, so the
    index never changes what matches. New rows go straight into the index (``fastupdate`` off):
    a search never reads through a list of entries not merged yet (up to 4 MB by default)."""
    return (
        "CREATE INDEX IF NOT EXISTS session_page_alias_text ON uploads"
        f" USING gin (({ALIAS_TEXT}) {trigram_ops}) WITH (fastupdate = off) WHERE {PROFILE_ROWS}"
    )


def _bounded_count(where: str) -> str:
    """A count of a session's profiles that meet ``where``, up to the bound ``?`` (an index walk of at
    most that many entries of a paging index, however large the session)."""
    return f"SELECT COUNT(*) AS n FROM (SELECT 1 FROM uploads WHERE session_id = ? AND {where} LIMIT ?) AS held"  # noqa: S608


#: How many profiles a session holds, up to the bound ``?``: what a quota compares.
BOUNDED_PROFILE_COUNT = _bounded_count(PROFILE_ROWS)
_BATCHES, _REFERENCES = (_bounded_count(f"kind = '{kind}' AND {PROFILE_ROWS}") for kind in ("batch", "reference"))
#: How many batch and reference profiles a session holds, each up to the bound ``?`` (session id and
#: bound given twice): each walked in ``session_page_by_alias`` from its kind's first entry.
BOUNDED_KIND_COUNTS = f"SELECT ({_BATCHES}) AS batch, ({_REFERENCES}) AS reference"
#: The bound that counts every profile (a LIMIT both databases take).
NO_BOUND = 2**62

#: A cursor: the sort key values of a row, then its id.
Cursor = tuple[Any, ...]


@dataclass(frozen=True)
class ProfileQuery:
    """Which page of a session's profiles: order, filters, and where to start.

    ``after``: the page of rows following this cursor in the order; ``before``: the page of rows
    preceding it (at most one of them). ``segment_tags``: only profiles with exactly these tags
    (``()``: unsegmented ones); None: any. ``text``: only profiles whose alias holds it
    (case-insensitive for ASCII letters)."""

    sort: str = "uploaded"
    descending: bool = True
    limit: int = 50
    kind: str | None = None
    segment_tags: tuple[tuple[str, str], ...] | None = None
    text: str = ""
    after: Cursor | None = None
    before: Cursor | None = None


@dataclass(frozen=True)
class ProfilePage:
    """One page of profiles in the query's order, with the cursors of its first and last rows and
    whether there are rows before and after it (under the same filters)."""

    uploads: list[UploadRecord] = field(default_factory=list)
    cursors: list[Cursor] = field(default_factory=list)
    has_previous: bool = False
    has_next: bool = False

    @property
    def first(self) -> Cursor | None:
        return self.cursors[0] if self.cursors else None

    @property
    def last(self) -> Cursor | None:
        return self.cursors[-1] if self.cursors else None


def cursor_is_valid(sort: str, cursor: Sequence[Any]) -> bool:
    """Whether ``cursor`` has the shape of a cursor of ``sort`` (its key types, then an upload id)."""
    keys = SORTS.get(sort)
    if keys is None or len(cursor) != len(keys) + 1:
        return False
    *values, upload_id = cursor
    if not isinstance(upload_id, str) or not (is_valid_id(upload_id, "log") or is_valid_id(upload_id, "ref")):
        return False
    if sort == "alias":
        kind, alias = values
        return kind in ("batch", "reference") and isinstance(alias, str) and len(alias) <= 1024
    (value,) = values
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def _tags_variants(tags: Sequence[tuple[str, str]]) -> list[str]:
    """The texts ``segment_tags`` may hold for these tags (non-ASCII written as is, or escaped by
    servers before that)."""
    pairs = [{"key": k, "value": v} for k, v in tags]
    return list(dict.fromkeys([json.dumps(pairs, ensure_ascii=False), json.dumps(pairs)]))


def _like_pattern(text: str) -> str:
    escaped = text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class ProfilePagingSql:
    """The paging statements (see the module docstring)."""

    if TYPE_CHECKING:  # provided by SqlMetadataStore

        def _query(self, statement: str, params: Sequence[object] = ()) -> list[dict[str, Any]]: ...
        @staticmethod
        def _upload_row(row: dict[str, Any]) -> UploadRecord: ...

    def _page_rows(
        self, session_id: str, query: ProfileQuery, cursor: Cursor | None, forward: bool, limit: int
    ) -> list[dict[str, Any]]:
        """Up to ``limit`` rows from ``cursor`` (exclusive) on, in the query's order (``forward``)
        or against it; each with its sort key values as ``page_k0``, ``page_k1``…

        Rows after a cursor ``(c0, c1, id)`` are read in turns, each an index seek and never a scan
        of the rows before the cursor: those tied with it on every key (``k0 = c0 AND k1 = c1 AND id
        > cid``), then those tied on the first keys (``k0 = c0 AND k1 > c1``), then the rest (``k0 >
        c0``), until the page is full. (A row-value comparison over the expressions of an index is
        not a seek in SQLite.)"""
        keys = (*SORTS[query.sort], "id")
        columns = ", ".join(f"{expr} AS page_k{i}" for i, expr in enumerate(keys[:-1]))
        base = f"SELECT *, {columns} FROM uploads WHERE session_id = ? AND {PROFILE_ROWS}"  # noqa: S608 - constants
        params: list[object] = [session_id]
        if query.kind is not None:
            base += " AND kind = ?"
            params.append(query.kind)
        if query.segment_tags is not None:
            variants = _tags_variants(query.segment_tags)
            base += f" AND segment_tags IN ({', '.join('?' for _ in variants)})"
            params.extend(variants)
        if query.text:
            base += f" AND {ALIAS_TEXT} LIKE ? ESCAPE '\\'"
            params.append(_like_pattern(query.text))
        descending = query.descending == forward
        direction = " DESC" if descending else ""

        def ordered(free: Sequence[str]) -> str:
            return " ORDER BY " + ", ".join(expr + direction for expr in free) + " LIMIT ?"

        if cursor is None:
            return self._query(base + ordered(keys), [*params, limit])
        rows: list[dict[str, Any]] = []
        for tied in range(len(keys) - 1, -1, -1):  # most keys tied with the cursor first
            equal = "".join(f" AND {expr} = ?" for expr in keys[:tied])
            beyond = f" AND {keys[tied]} {'<' if descending else '>'} ?"
            statement = base + equal + beyond + ordered(keys[tied:])
            rows += self._query(statement, [*params, *cursor[: tied + 1], limit - len(rows)])
            if len(rows) >= limit:
                break
        return rows

    def page_profiles(self, session_id: str, query: ProfileQuery) -> ProfilePage:
        """One page of a session's stored (non-duplicate) profiles (see :class:`ProfileQuery`)."""
        if not is_valid_id(session_id, "session") or query.sort not in SORTS or query.limit < 1:
            return ProfilePage()
        if query.before is not None:
            rows = self._page_rows(session_id, query, query.before, False, query.limit + 1)
            if len(rows) > query.limit:
                return self._page(list(reversed(rows[: query.limit])), has_previous=True, has_next=True)
            # nothing or less than a page before it: the first page (full, if the session has that many)
        cursor = query.after
        rows = self._page_rows(session_id, query, cursor, True, query.limit + 1)
        return self._page(rows[: query.limit], has_previous=cursor is not None, has_next=len(rows) > query.limit)

    def _page(self, rows: list[dict[str, Any]], *, has_previous: bool, has_next: bool) -> ProfilePage:
        def cursor(row: dict[str, Any]) -> Cursor:
            count = sum(1 for name in row if name.startswith("page_k"))
            return (*(row[f"page_k{i}"] for i in range(count)), row["id"])

        return ProfilePage(
            uploads=[self._upload_row(row) for row in rows],
            cursors=[cursor(row) for row in rows],
            has_previous=has_previous,
            has_next=has_next,
        )

    def profile_counts(self, session_id: str, *, at_most: int | None = None) -> dict[str, int]:
        """How many stored (non-duplicate) profiles a session holds, by kind (``batch``,
        ``reference``), each counted no further than ``at_most``: read from the
        ``session_page_by_alias`` index alone, at most ``at_most`` entries a kind whatever the
        session's size (a page shows "more than …" past it)."""
        if not is_valid_id(session_id, "session"):
            return {"batch": 0, "reference": 0}
        bound = NO_BOUND if at_most is None else max(0, at_most)
        row = self._query(BOUNDED_KIND_COUNTS, (session_id, bound, session_id, bound))[0]
        return {"batch": int(row["batch"]), "reference": int(row["reference"])}

    def count_profiles(self, session_id: str, *, at_most: int | None = None) -> int:
        """How many stored (non-duplicate) profiles a session holds, counting no further than
        ``at_most``: a quota's check costs its limit at most, not the session's size."""
        if not is_valid_id(session_id, "session"):
            return 0
        bound = NO_BOUND if at_most is None else max(0, at_most)
        return int(self._query(BOUNDED_PROFILE_COUNT, (session_id, bound))[0]["n"])

    def profile_bytes(self, session_id: str) -> int:
        """How many bytes the stored (non-duplicate) profiles of a session take (one aggregate)."""
        if not is_valid_id(session_id, "session"):
            return 0
        rows = self._query(f"SELECT SUM(size) AS n FROM uploads WHERE session_id = ? AND {PROFILE_ROWS}", (session_id,))  # noqa: S608
        return int(rows[0]["n"] or 0)


__all__: list[str] = [
    "ALIAS_TEXT",
    "BOUNDED_KIND_COUNTS",
    "BOUNDED_PROFILE_COUNT",
    "NO_BOUND",
    "NO_TIMESTAMP",
    "PAGING_INDEXES",
    "SORTS",
    "Cursor",
    "ProfilePage",
    "ProfilePagingSql",
    "ProfileQuery",
    "alias_text_index",
    "cursor_is_valid",
]
