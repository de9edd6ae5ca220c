"""What PostgreSQL's planner actually did for a query: the indexes it walked and the rows it read."""

from __future__ import annotations

import json
from typing import Any

import psycopg


def index_walks(
    url: str, sql: str, params: tuple[Any, ...], *, analyze: bool = False
) -> tuple[list[tuple[str, int]], str]:
    """``(index name, actual rows)`` of each index node of ``sql`` (``?`` placeholders) run under
    ``EXPLAIN ANALYZE`` with sequential scans off (a test's table is small enough to be read whole
    otherwise), and the plan as JSON text for an assertion's message. ``analyze``: ``ANALYZE
    uploads`` first, as autovacuum would, so the planner knows the rows."""
    with psycopg.connect(url, autocommit=True) as conn:
        if analyze:
            conn.execute("ANALYZE uploads")
        conn.execute("SET enable_seqscan = off")
        row = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql.replace("?", "%s"), params).fetchone()
        assert row is not None
        plan = row[0]
    nodes, walked = [plan[0]["Plan"]], []
    while nodes:
        node = nodes.pop()
        nodes.extend(node.get("Plans", []))
        if "Index" in node["Node Type"]:
            walked.append((node["Index Name"], node["Actual Rows"]))
    return walked, json.dumps(plan)
