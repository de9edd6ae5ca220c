"""An organization's dataset as its pages and notifications see it: where its pages are, the signed
expiring token a link to them carries, and the schema and weights the log API keeps for it.

The log API (``routes/organizations.py``) writes the settings; the pages (``observatory/``) show
them; notifications (``notify.py``) and observatory links carry a :func:`link_token`. This module
imports none of them.
"""

from __future__ import annotations

import hmac
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from whylogs_songbird.server.signing import UrlSigner

#: How long a link to a dataset's pages opens them (observatory links and notifications): the
#: token in the link carries its expiry, signed. A week: an alert read on Monday still opens.
LINK_TTL_SECONDS = 7 * 24 * 3600

#: Keys of the settings the log API keeps for a dataset (``Store.put_setting``).
COLUMN_KEY = "schema/column/"
METRIC_KEY = "schema/metric/"
WEIGHTS_KEY = "weights"


def pages_path(org_id: str, dataset_id: str) -> str:
    """The path of a dataset's overview page; its other pages are under it."""
    return f"/organizations/{quote(org_id, safe='')}/datasets/{quote(dataset_id, safe='')}"


def org_pages_path(org_id: str) -> str:
    """The path every page of an org's datasets is under (the scope of a login cookie)."""
    return f"/organizations/{quote(org_id, safe='')}"


def _token_subject(org_id: str, dataset_id: str) -> str:
    return f"dataset:{org_id}/{dataset_id}"


def link_token(signer: UrlSigner, org_id: str, dataset_id: str, expires: int) -> str:
    """The token of a link to a dataset's pages: ``<expires>.<signature>``, valid until ``expires``
    (unix seconds)."""
    return f"{expires}.{signer.signature(_token_subject(org_id, dataset_id), expires)}"


def new_link_token(signer: UrlSigner, org_id: str, dataset_id: str, ttl_seconds: int = LINK_TTL_SECONDS) -> str:
    """A :func:`link_token` valid for ``ttl_seconds`` from now."""
    return link_token(signer, org_id, dataset_id, int(time.time()) + ttl_seconds)


def check_link_token(
    signer: UrlSigner, org_id: str, dataset_id: str, token: str, now: float | None = None
) -> int | None:
    """The expiry of ``token`` when it opens this dataset's pages now, else None (malformed, signed
    for another dataset, tampered with, or expired). The signature is compared in constant time."""
    expires_text, _, signature = token.partition(".")
    if not (expires_text.isascii() and expires_text.isdigit() and 0 < len(expires_text) <= 12) or not signature:
        return None
    expires = int(expires_text)
    expected = signer.signature(_token_subject(org_id, dataset_id), expires)
    if not hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace")):
        return None
    return expires if (time.time() if now is None else now) <= expires else None


def dataset_of(store: Any, container_id: str) -> tuple[str, str] | None:
    """(org, dataset) of a dataset's container (a ``Store``'s), None for a guest session's id. An open
    transaction's container (``<dataset>/transaction/<token>``, a name no dataset id has) counts as its
    own name: see :func:`container_target`."""
    record = store.container(container_id)
    if record is None or record.dataset_id is None:
        return None
    return str(record.org_id), str(record.dataset_id)


def container_target(store: Any, container_id: str) -> tuple[str, str] | None:
    """What a container is to a monitors file: ``("session", id)``, ``("dataset", "ORG/DATASET")``,
    or None for a transaction's container, whose profiles no monitor looks at before the commit
    moves them into their dataset."""
    found = dataset_of(store, container_id)
    if found is None:
        return "session", container_id
    org_id, dataset_id = found
    return None if "/" in dataset_id else ("dataset", f"{org_id}/{dataset_id}")


@dataclass
class DatasetSettings:
    """What the log API keeps of a dataset besides profiles: columns' and metrics' schema (as put)
    and the columns' weights."""

    columns: dict[str, dict[str, Any]] = field(default_factory=dict)
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    weights: list[dict[str, Any]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.columns or self.metrics or self.weights)


def read_settings(store: Any, container_id: str) -> DatasetSettings:
    """The :class:`DatasetSettings` kept for a dataset's container (a ``Store``'s settings)."""
    columns = {k[len(COLUMN_KEY) :]: json.loads(v) for k, v in store.list_settings(container_id, COLUMN_KEY)}
    metrics = {k[len(METRIC_KEY) :]: json.loads(v) for k, v in store.list_settings(container_id, METRIC_KEY)}
    kept = store.get_setting(container_id, WEIGHTS_KEY)
    return DatasetSettings(columns=columns, metrics=metrics, weights=json.loads(kept) if kept else [])


__all__ = [
    "COLUMN_KEY",
    "LINK_TTL_SECONDS",
    "METRIC_KEY",
    "WEIGHTS_KEY",
    "DatasetSettings",
    "check_link_token",
    "container_target",
    "dataset_of",
    "link_token",
    "new_link_token",
    "org_pages_path",
    "pages_path",
    "read_settings",
]
