"""Publish whylogs profiles to songbird (WhyLabs) guest sessions and get observatory links back.

``import whylogs_songbird`` registers the ``"songbird"`` writer with whylogs::

    import whylogs as why
    import whylogs_songbird  # noqa: F401  (registers the writer)

    ok, url = why.log(df).writer("songbird").write()

With no endpoint set anywhere, profiles go to a local songbird server at http://127.0.0.1:8737,
started in the background on first use (``songbird server stop`` stops it); the hosted service
is one setting away (``endpoint="https://api.whylabsapp.com"``). Importing the package only
registers the writer: no server starts and no logging is changed until something is published.
"""

from __future__ import annotations

from whylogs_songbird.client import SongbirdClient
from whylogs_songbird.config import Settings, resolve_settings
from whylogs_songbird.errors import (
    AuthError,
    ConfigError,
    EmptyProfileError,
    ProfileError,
    PublishError,
    SessionBusyError,
    SessionNotFoundError,
    SongbirdApiError,
    SongbirdConnectionError,
    SongbirdError,
    SongbirdProtocolError,
)
from whylogs_songbird.publish import (
    PublishedProfile,
    Publisher,
    PublishResult,
    comparison_links,
    publish,
    publish_references,
)
from whylogs_songbird.session import claim_session, current_session, forget_session, new_session
from whylogs_songbird.timeline_client import fetch_timeline, timeline_frame
from whylogs_songbird.writer import SongbirdWriter, register

__version__ = "0.1.0"

register()

__all__ = [
    "AuthError",
    "ConfigError",
    "EmptyProfileError",
    "ProfileError",
    "PublishError",
    "PublishResult",
    "PublishedProfile",
    "Publisher",
    "SessionBusyError",
    "SessionNotFoundError",
    "Settings",
    "SongbirdApiError",
    "SongbirdClient",
    "SongbirdConnectionError",
    "SongbirdError",
    "SongbirdProtocolError",
    "SongbirdWriter",
    "claim_session",
    "comparison_links",
    "current_session",
    "fetch_timeline",
    "forget_session",
    "new_session",
    "publish",
    "publish_references",
    "register",
    "resolve_settings",
    "timeline_frame",
]
