"""Warming a fresh server: what the first profiles page pays once per process (importing whylogs'
drift module and scipy's distributions, first use of the sketch libraries, of pandas' and numpy's
code paths) is paid in a background thread at start, on two small profiles made here, so the first
person to open a comparison does not pay it. Readiness never waits for it.

Nothing uploaded is read: the profiles are made in this process from numbers it makes itself.
"""

from __future__ import annotations

import logging
import threading
import time

logger = logging.getLogger("whylogs_songbird.server")


def warm_pages() -> float:
    """Build what a two-profile comparison page builds (digest, rebuilt views, summaries, chart data,
    drift) for two small made-up profiles; the seconds it took."""
    import numpy as np
    import pandas as pd
    from whylogs.core import DatasetProfile

    from whylogs_songbird.column_stats import drift_scores, merge_views
    from whylogs_songbird.server.digest import digest_columns, digest_view, view_of
    from whylogs_songbird.server.summaries import chart_data, summarize_profile

    started = time.perf_counter()
    rng = np.random.default_rng(0)
    views = []
    for shift in (0.0, 1.0):
        frame = pd.DataFrame(
            {
                "number": rng.normal(shift, 1.0, 200),
                "count": rng.integers(0, 10, 200),
                "word": rng.choice(["a", "b", "c"], 200),
            }
        )
        profile = DatasetProfile()  # not why.log: that would also count a use of the logging API
        profile.track(pandas=frame)
        views.append(view_of(digest_columns(digest_view(profile.view()))))
    summaries = [summarize_profile(view) for view in views]
    merge_views(views)
    for name in views[0].get_columns():
        chart_data(name, views, summaries)
    drift_scores(target=views[1], reference=views[0])
    return time.perf_counter() - started


_warming: threading.Thread | None = None
_warming_lock = threading.Lock()


def warm_in_background() -> threading.Thread:
    """Start :func:`warm_pages` in a daemon thread (a failure is logged, never raised); the thread.

    Once per process: what it warms (imports, first uses of the libraries) stays warm for every
    later server of the process (``LocalServer``s started one after another), which get the first
    one's thread."""
    global _warming
    with _warming_lock:
        if _warming is None:
            _warming = _start_warming()
        return _warming


def _start_warming() -> threading.Thread:
    def run() -> None:
        try:
            took = warm_pages()
        except Exception:  # noqa: BLE001 - warming is an optimisation: the first page then pays instead
            logger.debug("warming the pages failed; the first page pays for it", exc_info=True)
        else:
            logger.debug("pages warmed in %.0f ms", took * 1000)

    thread = threading.Thread(target=run, name="songbird-warm", daemon=True)
    thread.start()
    return thread


__all__ = ["warm_in_background", "warm_pages"]
