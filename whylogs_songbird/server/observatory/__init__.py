"""The local observatory: HTML pages over the stored profiles, rendered with Jinja2 and plotly.js.

Routes (see :func:`observatory_router`):

- ``GET /`` — landing page: how to point the writer here, and the recent sessions (only when the
  server listens on loopback: a session id is what opens its profiles, see ``list_sessions``);
- ``GET /sessions/{session_id}`` — every profile of a session, newest first, pick up to 3;
- ``GET /resources/{model_id}/profiles?profile=…&sessionToken=…[&segment=…]`` — 1 to 3
  profiles side by side: headers, per-column summaries, charts and (2+ profiles) drift;
- ``GET /static/{name}`` — the pages' CSS and JS, and plotly.js from the installed ``plotly``.

Pages are built in worker threads (sync routes). Deserialized views, summaries, drift scores
and chart data are cached in memory, keyed by upload id + sha256 + size, so a profile replaced
by a new PUT is never served stale.
"""

from whylogs_songbird.server.common import observatory_link, segment_label
from whylogs_songbird.server.observatory.base import PageError
from whylogs_songbird.server.observatory.cache import LruCache, ProfileCache
from whylogs_songbird.server.observatory.page import PageModel, build_page_model
from whylogs_songbird.server.observatory.routes import mount_observatory, observatory_router
from whylogs_songbird.server.observatory.selection import Selection

__all__ = [
    "LruCache",
    "PageError",
    "ProfileCache",
    "PageModel",
    "Selection",
    "build_page_model",
    "mount_observatory",
    "observatory_link",
    "observatory_router",
    "segment_label",
]
