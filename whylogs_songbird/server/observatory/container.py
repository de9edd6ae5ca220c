"""What a page shows the profiles of: a guest session, or an organization's dataset (kept in a
container row of the store, see ``Store.dataset_container``). The session pages and the dataset
pages are the same pages; a :class:`PageContainer` gives them their paths, links and words."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

from whylogs_songbird.models import GUEST_MODEL_ID, TIMELINE_PATH
from whylogs_songbird.server.common import observatory_link
from whylogs_songbird.server.datasets import pages_path


@dataclass(frozen=True)
class PageContainer:
    """A guest session (``org_id`` None) or a dataset of an organization; ``id`` is the store's
    container id, which a dataset's pages never show."""

    id: str
    org_id: str | None = None
    dataset_id: str | None = None

    @classmethod
    def session(cls, session_id: str) -> PageContainer:
        return cls(id=session_id)

    @classmethod
    def dataset(cls, container_id: str, org_id: str, dataset_id: str) -> PageContainer:
        return cls(id=container_id, org_id=org_id, dataset_id=dataset_id)

    @property
    def is_dataset(self) -> bool:
        return self.dataset_id is not None

    @property
    def kind(self) -> str:
        """``"session"`` or ``"dataset"`` (the word pages use)."""
        return "dataset" if self.is_dataset else "session"

    @property
    def name(self) -> str:
        """How pages name it: the session id, or ``ORG/DATASET``."""
        return f"{self.org_id}/{self.dataset_id}" if self.is_dataset else self.id

    @property
    def described(self) -> str:
        """The start of a sentence about it: ``Session session-…`` or ``Dataset D of organization O``."""
        return f"Dataset {self.dataset_id} of organization {self.org_id}" if self.is_dataset else f"Session {self.id}"

    @property
    def home_path(self) -> str:
        """Its overview page: every profile, newest first."""
        if self.org_id is not None and self.dataset_id is not None:
            return pages_path(self.org_id, self.dataset_id)
        return f"/sessions/{self.id}"

    @property
    def timeline_path(self) -> str:
        return f"{self.home_path}/timeline"

    @property
    def profiles_path(self) -> str:
        """The page of 1 to 3 profiles (a session's carries its id in ``sessionToken``)."""
        return f"{self.home_path}/profiles" if self.is_dataset else f"/resources/{GUEST_MODEL_ID}/profiles"

    @property
    def link_params(self) -> list[tuple[str, str]]:
        """The query parameters every link to its profiles page carries (a session's id)."""
        return [] if self.is_dataset else [("sessionToken", self.id)]

    def timeline_api(self, params: Sequence[tuple[str, str]] = ()) -> str:
        """The timeline JSON its timeline page reads (a dataset's: under its pages, where the page's
        cookie reaches)."""
        path = f"{self.home_path}/timeline/data" if self.is_dataset else TIMELINE_PATH.format(session_id=self.id)
        return path + (f"?{urlencode(list(params))}" if params else "")

    def link(self, base: str, profiles: Sequence[str | int], segments: Sequence[str] = ()) -> str:
        """A link to its profiles page showing ``profiles`` (see ``common.observatory_link``)."""
        if not self.is_dataset:
            return observatory_link(base, self.id, profiles, segments)
        params: list[tuple[str, str]] = [("profile", str(p)) for p in profiles]
        params.extend(("segment", s) for s in segments)
        return f"{base}{self.profiles_path}?{urlencode(params)}"


__all__ = ["PageContainer"]
