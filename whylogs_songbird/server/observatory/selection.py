"""Which profiles a page shows: the ``profile=`` and ``segment=`` values of a link, resolved
into :class:`Selection` objects."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from whylogs_songbird.server.common import segment_label
from whylogs_songbird.server.observatory.base import PROFILE_COLORS, CacheKey, PageError, shown
from whylogs_songbird.server.observatory.cache import ProfileOutline, upload_key
from whylogs_songbird.server.store import UploadRecord, is_valid_id, parse_timestamp_selector
from whylogs_songbird.server.summaries import ProfileSummary


def format_timestamp(millis: int | None) -> str:
    if millis is None:
        return "—"
    try:
        moment = datetime.fromtimestamp(millis / 1000, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return str(millis)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass
class Selection:
    """One profile shown on a page: one upload, or every upload of a batch timestamp merged."""

    index: int
    selector: str
    kind: str
    uploads: list[UploadRecord]
    segment: str | None = None
    #: The segments of a merged batch: (label, link) pairs.
    segments: list[tuple[str, str]] = field(default_factory=list)
    #: Column names and row count of the whole profile (no column rebuilt for them).
    outline: ProfileOutline | None = None
    #: Summaries of the columns the page shows.
    summary: ProfileSummary | None = None
    single_url: str = ""
    #: Uploads of the same bytes (same timestamp and segment) that were kept once.
    duplicates: int = 0

    @property
    def key(self) -> CacheKey:
        return (tuple(upload_key(u) for u in self.uploads), self.segment)

    @property
    def number(self) -> int:
        return self.index + 1

    @property
    def color(self) -> str:
        return PROFILE_COLORS[self.index % len(PROFILE_COLORS)]

    @property
    def alias(self) -> str | None:
        aliases = {u.alias for u in self.uploads if u.alias}
        return ", ".join(sorted(aliases)) if aliases else None

    @property
    def dataset_timestamp(self) -> int | None:
        stamps = [u.dataset_timestamp for u in self.uploads if u.dataset_timestamp is not None]
        return min(stamps) if stamps else None

    @property
    def size(self) -> int:
        """Bytes stored for this profile (all merged uploads together)."""
        return sum(u.size or 0 for u in self.uploads)

    @property
    def timestamp_text(self) -> str:
        return format_timestamp(self.dataset_timestamp)

    @property
    def segment_text(self) -> str:
        if len(self.uploads) == 1:
            return segment_label(self.uploads[0].segment_tags) or "—"
        if self.segments:
            return f"all {len(self.segments)} segments merged"
        return f"{len(self.uploads)} uploads merged"

    @property
    def title(self) -> str:
        if self.kind == "reference":
            return self.alias or self.selector
        return f"batch {self.timestamp_text}"


def parse_segments(raw: list[str], selectors: list[str]) -> list[str | None]:
    """The segment asked for each selector: one ``segment`` applies to every batch timestamp;
    one per profile applies positionally (an empty value means the whole batch)."""
    if not raw:
        return [None] * len(selectors)
    if len(raw) == 1:
        return [raw[0] or None if is_timestamp(s) else None for s in selectors]
    if len(raw) == len(selectors):
        result: list[str | None] = []
        for selector, segment in zip(selectors, raw):
            if segment and not is_timestamp(selector):
                raise PageError(
                    400,
                    "Segment on a profile id",
                    f"The segment {shown(segment)!r} is given for {shown(selector)!r}, which is not a batch "
                    "timestamp: a segment narrows a batch timestamp, and an upload id already names one segment.",
                )
            result.append(segment or None)
        return result
    raise PageError(
        400,
        "Too many segments",
        f"The link gives {len(raw)} segment parameters for {len(selectors)} profiles: give one segment for "
        "every batch timestamp, or one per profile in the same order (empty for the whole batch).",
    )


def is_timestamp(selector: str) -> bool:
    return parse_timestamp_selector(selector) is not None


def check_selector(selector: str) -> None:
    if is_timestamp(selector) or is_valid_id(selector, "ref") or is_valid_id(selector, "log"):
        return
    raise PageError(
        400,
        "Malformed profile",
        f"{shown(selector)!r} is not a profile: give a batch dataset timestamp in epoch milliseconds "
        "(e.g. 1700000000000), a reference profile id (ref-…) or a batch upload id (log-…).",
    )
