"""The demo: a made-up "loan applications" dataset, profiled and published with drift in it.

Everything here is deterministic and offline: the data comes from a seeded numpy generator, so
two runs on any machine give the same rows. The flow, used by ``songbird demo`` and the
quickstart notebook:

1. :func:`make_demo_data` builds a ``training`` reference frame and one frame per day
   (midnight UTC of successive days, ending today), with drift growing in the later days;
2. :func:`profile_demo` profiles each frame with whylogs into upload items;
3. :func:`publish_demo` publishes them in one call and asks for a link that compares the
   reference with the batch that drifted most.

>>> report = run_demo(endpoint="http://127.0.0.1:8737")        # doctest: +SKIP
>>> print(report.comparison_url)                              # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any

import numpy as np
import pandas as pd

from whylogs_songbird.config import Settings, resolve_settings
from whylogs_songbird.errors import PublishError
from whylogs_songbird.profiles import ProfileItem, items_from
from whylogs_songbird.publish import PublishedProfile, Publisher, PublishResult

#: The seed of every random number in the demo.
SEED = 20240501
REFERENCE_NAME = "training"
REFERENCE_ROWS = 2000
BATCH_ROWS = 500
DEFAULT_DAYS = 7

EMPLOYMENT = ("salaried", "self_employed", "contract", "unemployed")
PURPOSES = ("home", "car", "education", "debt_consolidation", "business")
TERMS = (12, 24, 36, 60)
NUMERIC_COLUMNS = ("applicant_age", "annual_income", "loan_amount", "credit_score")
CATEGORICAL_COLUMNS = ("employment", "purpose", "term_months")

#: How strong the drift is on each day of a 7-day demo: quiet, then an incident that peaks on
#: the sixth day and eases on the seventh. Other lengths stretch this shape.
DRIFT_SHAPE = (0.0, 0.0, 0.05, 0.3, 0.7, 1.0, 0.6)

#: ``progress(step, done, total)``: called as the demo advances (steps: "profile", then "link").
Progress = Callable[[str, int, int], None]


def loan_applications(rows: int, *, seed: int = SEED, drift: float = 0.0) -> pd.DataFrame:
    """``rows`` made-up loan applications; ``drift`` in [0, 1] moves them away from the training data.

    With drift, incomes fall, loans grow, credit scores drop, more applicants are on contracts or
    unemployed and more loans are for debt consolidation. About 2% of incomes are missing.
    """
    if rows < 1:
        raise ValueError(f"rows must be at least 1, not {rows}")
    if not 0.0 <= drift <= 1.0:
        raise ValueError(f"drift must be between 0 and 1, not {drift}")
    rng = np.random.default_rng(seed)
    age = np.clip(rng.normal(41 - 4 * drift, 11, rows), 21, 75).round().astype(int)
    income = rng.lognormal(np.log(58_000 * (1 - 0.3 * drift)), 0.45, rows).round(-2)
    income[rng.random(rows) < 0.02] = np.nan
    ratio = rng.uniform(0.1, 0.6, rows) * (1 + 0.9 * drift)
    loan = (np.nan_to_num(income, nan=58_000) * ratio).round(-2)
    score = np.clip(rng.normal(690 - 70 * drift, 55, rows), 300, 850).round().astype(int)
    employment_p = _mix((0.62, 0.18, 0.12, 0.08), (0.35, 0.15, 0.30, 0.20), drift)
    purpose_p = _mix((0.30, 0.25, 0.15, 0.20, 0.10), (0.15, 0.15, 0.10, 0.50, 0.10), drift)
    return pd.DataFrame(
        {
            "applicant_age": age,
            "annual_income": income,
            "loan_amount": loan,
            "credit_score": score,
            "employment": rng.choice(EMPLOYMENT, rows, p=employment_p),
            "purpose": rng.choice(PURPOSES, rows, p=purpose_p),
            "term_months": rng.choice(TERMS, rows, p=(0.15, 0.25, 0.40, 0.20)),
        }
    )


def _mix(base: Sequence[float], drifted: Sequence[float], drift: float) -> list[float]:
    weights = [(1 - drift) * b + drift * d for b, d in zip(base, drifted)]
    total = sum(weights)
    return [w / total for w in weights]


def drift_levels(days: int) -> list[float]:
    """The drift of each of ``days`` daily batches: :data:`DRIFT_SHAPE` stretched to ``days``."""
    if days < 1:
        raise ValueError(f"days must be at least 1, not {days}")
    if days == len(DRIFT_SHAPE):
        return list(DRIFT_SHAPE)
    positions = np.linspace(0, len(DRIFT_SHAPE) - 1, days)
    return [round(float(v), 3) for v in np.interp(positions, range(len(DRIFT_SHAPE)), DRIFT_SHAPE)]


def demo_days(days: int, *, last: date | None = None) -> list[datetime]:
    """Midnight UTC of ``days`` successive days, ending with ``last`` (default: today, UTC)."""
    last = last or datetime.now(timezone.utc).date()
    end = datetime.combine(last, time(0, 0), tzinfo=timezone.utc)
    return [end - timedelta(days=days - 1 - i) for i in range(days)]


def drift_score(reference: pd.DataFrame, batch: pd.DataFrame) -> dict[str, float]:
    """How far each column of ``batch`` is from ``reference``, in [0, 1].

    Numeric columns: the two-sample Kolmogorov-Smirnov statistic (largest gap between the two
    empirical distribution functions). Categorical columns: the total variation distance between
    the two frequency tables. Missing values are left out.
    """
    scores: dict[str, float] = {}
    for column in NUMERIC_COLUMNS:
        a = np.sort(reference[column].dropna().to_numpy(dtype=float))
        b = np.sort(batch[column].dropna().to_numpy(dtype=float))
        grid = np.concatenate([a, b])
        cdf_a = np.searchsorted(a, grid, side="right") / len(a)
        cdf_b = np.searchsorted(b, grid, side="right") / len(b)
        scores[column] = round(float(np.max(np.abs(cdf_a - cdf_b))), 4)
    for column in CATEGORICAL_COLUMNS:
        pa = reference[column].value_counts(normalize=True)
        pb = batch[column].value_counts(normalize=True)
        scores[column] = round(float(pa.subtract(pb, fill_value=0).abs().sum() / 2), 4)
    return scores


@dataclass
class DemoBatch:
    """One day of the demo."""

    day: datetime
    frame: pd.DataFrame = field(repr=False)
    drift_level: float
    #: Per-column drift against the reference (see :func:`drift_score`).
    column_drift: dict[str, float] = field(default_factory=dict)
    #: Filled in by :func:`publish_demo`.
    published: PublishedProfile | None = None

    @property
    def dataset_timestamp(self) -> int:
        """Midnight UTC of the day, in epoch milliseconds."""
        return int(self.day.timestamp() * 1000)

    @property
    def score(self) -> float:
        """The largest column drift of the day."""
        return max(self.column_drift.values(), default=0.0)

    @property
    def most_drifted_column(self) -> str:
        return max(self.column_drift, key=lambda c: self.column_drift[c]) if self.column_drift else ""


@dataclass
class DemoData:
    """The demo's frames: one reference and one per day."""

    reference: pd.DataFrame = field(repr=False)
    batches: list[DemoBatch]
    reference_name: str = REFERENCE_NAME

    @property
    def most_drifted(self) -> DemoBatch:
        """The day whose data is furthest from the reference."""
        return max(self.batches, key=lambda b: b.score)


def make_demo_data(days: int = DEFAULT_DAYS, *, last: date | None = None, seed: int = SEED) -> DemoData:
    """The reference frame and ``days`` daily frames (each with its drift scores against the reference)."""
    reference = loan_applications(REFERENCE_ROWS, seed=seed)
    batches = []
    for index, (day, level) in enumerate(zip(demo_days(days, last=last), drift_levels(days))):
        frame = loan_applications(BATCH_ROWS, seed=seed + 1 + index, drift=level)
        batches.append(DemoBatch(day=day, frame=frame, drift_level=level, column_drift=drift_score(reference, frame)))
    return DemoData(reference=reference, batches=batches)


def profile_demo(data: DemoData, progress: Progress | None = None) -> list[ProfileItem]:
    """Profile every frame with whylogs: the reference first, then the days in order."""
    import whylogs as why

    total = 1 + len(data.batches)
    if progress:
        progress("profile", 0, total)
    items = items_from(
        why.log(data.reference),
        reference_profile_name=data.reference_name,
        dataset_timestamp=data.batches[0].dataset_timestamp - 86_400_000,
    )
    if progress:
        progress("profile", 1, total)
    for done, batch in enumerate(data.batches, start=2):
        items.extend(items_from(why.log(batch.frame), dataset_timestamp=batch.dataset_timestamp))
        if progress:
            progress("profile", done, total)
    return items


@dataclass
class DemoReport:
    """What the demo published, and where to look at it."""

    endpoint: str
    data: DemoData
    result: PublishResult
    #: Observatory link showing the reference next to the most drifted batch.
    comparison_url: str | None = None

    @property
    def session_id(self) -> str | None:
        return self.result.session_id

    @property
    def reference(self) -> PublishedProfile:
        return next(p for p in self.result.profiles if p.kind == "reference")

    @property
    def most_drifted(self) -> DemoBatch:
        return self.data.most_drifted

    def links(self) -> list[tuple[str, str]]:
        """``(label, url)`` for the reference, each day and the comparison, in that order."""
        links = []
        if self.reference.observatory_url:
            links.append((f"reference {self.reference.alias}", self.reference.observatory_url))
        for batch in self.data.batches:
            if batch.published is not None and batch.published.observatory_url:
                links.append((f"batch {batch.day:%Y-%m-%d}", batch.published.observatory_url))
        if self.comparison_url:
            links.append((f"{self.data.reference_name} vs {self.most_drifted.day:%Y-%m-%d}", self.comparison_url))
        return links

    def _repr_html_(self) -> str:
        import html

        rows = "".join(
            f'<li>{html.escape(label)}: <a href="{html.escape(url)}" target="_blank">{html.escape(url)}</a></li>'
            for label, url in self.links()
        )
        return f"<div><b>songbird demo</b> at {html.escape(self.endpoint)}<ul>{rows}</ul></div>"


def publish_demo(
    data: DemoData,
    items: Sequence[ProfileItem],
    *,
    settings: Settings | None = None,
    publisher: Publisher | None = None,
    progress: Progress | None = None,
) -> DemoReport:
    """Publish the demo's items in one go and ask for the comparison link.

    Raises `PublishError` if any profile did not land. Pass ``publisher`` to reuse one (the CLI
    passes one whose client reports each upload); otherwise one is made from ``settings``.
    """
    own = publisher is None
    active = publisher or Publisher(settings or resolve_settings())
    try:
        result = active.publish(items)
        if not result.ok:
            raise PublishError(result.summary(), result)
        batches = [p for p in result.profiles if p.kind == "batch"]
        for batch, published in zip(data.batches, batches):
            batch.published = published
        report = DemoReport(endpoint=result.endpoint, data=data, result=result)
        if progress:
            progress("link", 0, 1)
        reference = report.reference
        worst = data.most_drifted
        session_id = reference.session_id or result.session_id
        if session_id and reference.profile_id:
            links = active.client.get_session_profile_observatory_link(
                session_id,
                batch_profile_timestamps=[worst.dataset_timestamp],
                reference_profile_ids=[reference.profile_id],
            )
            report.comparison_url = links.observatory_url
        if progress:
            progress("link", 1, 1)
        return report
    finally:
        if own:
            active.close()


def run_demo(days: int = DEFAULT_DAYS, *, progress: Progress | None = None, **options: Any) -> DemoReport:
    """Make, profile and publish the demo data; ``options`` are the writer's (endpoint, config_dir, ...)."""
    settings = resolve_settings(options)
    data = make_demo_data(days)
    items = profile_demo(data, progress)
    return publish_demo(data, items, settings=settings, progress=progress)
