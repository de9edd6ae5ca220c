"""The results of a publish: what happened to each profile, and how that reads (one line, a notebook table).

`PublishResult` is what `whylogs_songbird.publish.Publisher.publish` returns; it knows nothing of
how profiles are published. `PublishResult.compare_with` asks the publisher's
`whylogs_songbird.publish.comparison_links`, which that module puts here when it is imported (the
package imports it): the results sit below the publisher, so they do not import it.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from whylogs_songbird.models import SegmentTag
from whylogs_songbird.profiles import format_ms
from whylogs_songbird.session import Kind

#: What `PublishResult.compare_with` calls: `whylogs_songbird.publish.comparison_links`, set by that module.
comparison_links: Callable[..., list[str]] | None = None


@dataclass
class PublishedProfile:
    """What happened to one profile of a publish."""

    kind: Kind
    dataset_timestamp: int
    alias: str | None = None
    segment_tags: tuple[SegmentTag, ...] = ()
    ok: bool = False
    profile_id: str | None = None
    session_id: str | None = None
    observatory_url: str | None = None
    error: str | None = None
    size: int | None = None
    outbox_entry: str | None = None
    exception: Exception | None = field(default=None, repr=False, compare=False)
    #: The presigned URL of this profile's slot, once one was given (never shown: it is signed).
    upload_url: str | None = field(default=None, repr=False, compare=False)

    #: The id of an earlier upload of the same bytes, when the server kept that one instead.
    duplicate_of: str | None = None

    @property
    def label(self) -> str:
        """A short human name: the alias for a reference, the date (and segment) for a batch."""
        name = (self.alias or "reference") if self.kind == "reference" else f"batch {format_ms(self.dataset_timestamp)}"
        if self.segment_tags and self.kind == "batch":
            name += " [" + ",".join(f"{t.key}={t.value}" for t in self.segment_tags) + "]"
        return name

    @property
    def link_key(self) -> int | str:
        """How the link operation names this profile: reference id, or batch timestamp."""
        return (self.profile_id or "") if self.kind == "reference" else self.dataset_timestamp


@dataclass
class PublishResult:
    """The outcome of a publish: per-profile results and combined observatory links (≤ 3 profiles each)."""

    endpoint: str
    profiles: list[PublishedProfile]
    observatory_urls: list[str] = field(default_factory=list)
    #: Why nothing was published, when the publish failed before any profile was tried.
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.profiles) and all(p.ok for p in self.profiles)

    @property
    def landed(self) -> list[PublishedProfile]:
        return [p for p in self.profiles if p.ok]

    @property
    def failed(self) -> list[PublishedProfile]:
        return [p for p in self.profiles if not p.ok]

    @property
    def session_id(self) -> str | None:
        ids = [p.session_id for p in self.profiles if p.session_id]
        return ids[-1] if ids else None

    @property
    def observatory_url(self) -> str | None:
        """The first combined link (the only one for up to 3 profiles)."""
        if self.observatory_urls:
            return self.observatory_urls[0]
        return next((p.observatory_url for p in self.landed if p.observatory_url), None)

    def compare_with(self, reference: str, **options: Any) -> list[str]:
        """Observatory links comparing this result's batches with the reference named ``reference``.

        The reference is one published in the same session (by this process or another: its id
        is remembered with the stored session), or in this result. One link per 3 profiles, as
        the observatory allows; each link holds the reference and up to 2 batches.
        ``options`` are the settings of the publish (endpoint, config_dir, ...).

        >>> batches = publish(why.log(today_df))                      # doctest: +SKIP
        >>> batches.compare_with("train")                             # doctest: +SKIP
        """
        compare = comparison_links
        assert compare is not None, "whylogs_songbird.publish sets it, and the package imports that module"
        return compare(self, reference, **options)

    def summary(self) -> str:
        """One line: how many landed, how many failed, and the first failure."""
        if self.error is not None:
            return f"nothing was published to {self.endpoint}: {self.error}"
        text = f"{len(self.landed)} of {len(self.profiles)} profiles published to {self.endpoint}"
        if self.failed:
            first = self.failed[0]
            text += f"; {len(self.failed)} failed ({first.label}: {first.error})"
        return text

    def _repr_html_(self) -> str:
        rows = []
        for p in self.profiles:
            status = "✅" if p.ok else "❌"
            link = (
                f'<a href="{html.escape(p.observatory_url)}" target="_blank">open</a>'
                if p.ok and p.observatory_url
                else html.escape(p.error or "")
            )
            rows.append(
                f"<tr><td>{status}</td><td>{html.escape(p.kind)}</td><td>{html.escape(p.label)}</td><td>{link}</td></tr>"
            )
        combined = "".join(
            f'<li><a href="{html.escape(u)}" target="_blank">{html.escape(u)}</a></li>' for u in self.observatory_urls
        )
        return (
            f"<div><b>songbird</b>: {html.escape(self.summary())}"
            f"<table><tr><th></th><th>kind</th><th>profile</th><th>link</th></tr>{''.join(rows)}</table>"
            + (f"<p>Compare together:</p><ul>{combined}</ul>" if combined else "")
            + "</div>"
        )
