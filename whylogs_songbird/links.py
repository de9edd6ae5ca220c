"""Observatory links: the combined links of a publish, and links comparing batches with a reference.

A link shows at most `MAX_PROFILES_PER_LINK` profiles. `CombinedLinks` splits a publish's
profiles into such chunks and asks for each chunk's link as early as it can; `comparison_links_in`
pairs a named reference with up to two batches per link. Both ask through
`whylogs_songbird.session.request_link`, so a guest session and a dataset get their links alike.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from whylogs_songbird.errors import ConfigError, SongbirdError
from whylogs_songbird.models import MAX_PROFILES_PER_LINK
from whylogs_songbird.results import PublishedProfile, PublishResult
from whylogs_songbird.session import DatasetTarget, Target, request_link

#: Links are part of a publish: their failures are logged under the publisher's name, as users configure it.
logger = logging.getLogger("whylogs_songbird.publish")

#: Asks for one combined link: (session id, link keys, the profiles to fill in) -> the link, or None.
FetchLink = Callable[[str, list[int | str], Sequence[PublishedProfile]], str | None]


def fetch_link(
    target: Target, session_id: str, keys: list[int | str], profiles: Sequence[PublishedProfile]
) -> str | None:
    """One combined link for ``keys`` (≤ 3 profiles); fills in the per-profile links still missing."""
    stamps = [k for k in keys if isinstance(k, int)]
    ids = [k for k in keys if isinstance(k, str)]
    try:
        answer = request_link(target, session_id, stamps, ids)
    except SongbirdError as exc:
        logger.warning("songbird: could not get an observatory link for %s: %s", keys, exc)
        return None
    individual = dict(zip([*stamps, *ids], answer.individual_observatory_urls))
    for profile in profiles:
        if not profile.observatory_url and profile.link_key in individual:
            profile.observatory_url = individual[profile.link_key]
    return answer.observatory_url


class CombinedLinks:
    """The combined links of one publish (≤ 3 profiles each), fetched as early as possible.

    The profiles are split up front, in order, into chunks of up to 3 distinct link keys (a batch
    by its timestamp, a reference on its own). When every profile of a chunk has landed in one
    session, its link is asked for at once (``submit``), while the other PUTs still run. At the end
    the chunks are made again from what actually landed, exactly as without the head start; a
    chunk asked for early is taken as it is, any other is asked for then.
    """

    def __init__(
        self,
        results: list[PublishedProfile],
        fetch: FetchLink,
        submit: Callable[[Callable[[], None]], None] | None,
    ) -> None:
        self._fetch = fetch
        self._results = results
        self._submit = submit
        self._lock = threading.Lock()
        self._early: dict[tuple[str, tuple[int | str, ...]], list[str | None]] = {}
        identities = [(r.kind, r.dataset_timestamp if r.kind == "batch" else i) for i, r in enumerate(results)]
        distinct = list(dict.fromkeys(identities))
        chunk_of_identity = {identity: n // MAX_PROFILES_PER_LINK for n, identity in enumerate(distinct)}
        self._chunk_of = [chunk_of_identity[identity] for identity in identities]
        self._members: dict[int, list[int]] = {}
        for index, chunk in enumerate(self._chunk_of):
            self._members.setdefault(chunk, []).append(index)
        self._waiting = {chunk: len(members) for chunk, members in self._members.items()}

    def landed(self, index: int) -> None:
        """Profile ``index`` is done (landed or not); ask for its chunk's link if the chunk is complete."""
        if self._submit is None:
            return
        with self._lock:
            chunk = self._chunk_of[index]
            self._waiting[chunk] -= 1
            if self._waiting[chunk]:
                return
            profiles = [self._results[i] for i in self._members[chunk]]
            sessions = {p.session_id for p in profiles}
            if not all(p.ok for p in profiles) or len(sessions) != 1 or None in sessions:
                return
            session_id = profiles[0].session_id or ""
            keys = list(dict.fromkeys(p.link_key for p in profiles))
            answer: list[str | None] = []
            self._early[(session_id, tuple(keys))] = answer

        def fetch() -> None:
            answer.append(self._fetch(session_id, keys, profiles))

        self._submit(fetch)

    def add_to(self, publish_result: PublishResult, run_all: Callable[[list[Callable[[], None]]], None]) -> None:
        """Set ``publish_result.observatory_urls``; fill in missing per-profile links.

        ``run_all`` runs the fetches not made early, and returns when they are done."""
        landed = publish_result.landed
        if len(landed) == 1 and landed[0].observatory_url:
            publish_result.observatory_urls = [landed[0].observatory_url]
            return
        by_session: dict[str, list[PublishedProfile]] = {}
        for profile in landed:
            by_session.setdefault(profile.session_id or "", []).append(profile)
        chunks: list[tuple[str, list[int | str], list[PublishedProfile]]] = []
        for session_id, profiles in by_session.items():
            keys = list(dict.fromkeys(p.link_key for p in profiles))
            for start in range(0, len(keys), MAX_PROFILES_PER_LINK):
                chunks.append((session_id, keys[start : start + MAX_PROFILES_PER_LINK], profiles))
        links: list[str | None] = [None] * len(chunks)

        def fetch(n: int, session_id: str, keys: list[int | str], profiles: list[PublishedProfile]) -> None:
            links[n] = self._fetch(session_id, keys, profiles)

        late: list[Callable[[], None]] = []
        for n, (session_id, keys, profiles) in enumerate(chunks):
            early = self._early.get((session_id, tuple(keys)))
            if early:
                links[n] = early[0]
            else:
                late.append(functools.partial(fetch, n, session_id, keys, profiles))
        run_all(late)
        publish_result.observatory_urls = [link for link in links if link]


def batches_to_compare(
    batches: PublishResult | Sequence[PublishedProfile] | Sequence[int], reference: str
) -> tuple[str | None, list[int], str | None]:
    """What ``batches`` name: (the session of their first batch, their timestamps, the id of ``reference`` among them).

    ``batches`` is a `PublishResult` (its landed profiles), its profiles, or epoch-ms timestamps.
    """
    session_id: str | None = None
    stamps: list[int] = []
    reference_id: str | None = None
    if isinstance(batches, PublishResult):
        profiles: Sequence[Any] = batches.landed
    else:
        profiles = list(batches)
    for item in profiles:
        if isinstance(item, PublishedProfile):
            if item.kind == "reference":
                if item.alias == reference and item.profile_id:
                    reference_id = item.profile_id
                continue
            stamps.append(item.dataset_timestamp)
            session_id = session_id or item.session_id
        elif isinstance(item, int) and not isinstance(item, bool):
            stamps.append(item)
        else:
            raise ConfigError(f"comparison_links takes published profiles or epoch-ms timestamps, not {item!r}.")
    return session_id, stamps, reference_id


def comparison_links_in(
    target: Target,
    stamps: list[int],
    reference: str,
    *,
    session_id: str | None = None,
    pinned_session_id: str | None = None,
    reference_id: str | None = None,
) -> list[str]:
    """Links comparing the batches ``stamps`` with the reference named ``reference``, 2 batches per link.

    The session is ``target``'s dataset, else ``session_id`` (the batches'), else the pinned
    one, else the one stored for the endpoint; the reference's id, when not given, is the one
    remembered for that session.
    """
    store = target.store
    endpoint = target.endpoint
    if isinstance(target, DatasetTarget):
        session_id = target.session_id()
    session_id = session_id or pinned_session_id or store.get(endpoint)
    if session_id is None:
        raise ConfigError(f"There is no stored guest session for {endpoint}: publish the batches first.")
    reference_id = reference_id or store.reference_id(endpoint, session_id, reference)
    if reference_id is None:
        raise ConfigError(
            f"No reference named {reference!r} was published into session {session_id} from this machine: "
            f"publish it first, e.g. publish(why.log(df), reference_profile_name={reference!r})."
        )
    stamps = list(dict.fromkeys(stamps))
    if not stamps:
        raise ConfigError("comparison_links got no batch profiles to compare with the reference.")
    per_link = MAX_PROFILES_PER_LINK - 1
    links = []
    for start in range(0, len(stamps), per_link):
        answer = request_link(target, session_id, stamps[start : start + per_link], [reference_id])
        links.append(answer.observatory_url)
    return links
