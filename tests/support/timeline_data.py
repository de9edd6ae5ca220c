"""Data for the timeline tests: a reference and 30 daily batches where one column shifts from day 20;
and the wide frames the timeline benchmarks profile (:func:`wide_frame`).

Numeric values are stratified samples of a normal distribution (one value per quantile slice, in
shuffled order), and categories hold exact proportions, so a batch that does not shift matches the
reference closely and whylogs' drift tests give NO_DRIFT without depending on a lucky seed; the
shifted column moves by one standard deviation, far beyond what whylogs' KS test calls DRIFT.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import norm

DAY_MS = 86_400_000
#: 2026-01-05 00:00 UTC, a Monday
START_MS = 1_767_571_200_000
DAYS = 30
SHIFT_DAY = 20
SHIFTED = "score"
COLORS = ("red", "green", "blue", "grey")


def stratified_normal(n: int, rng: np.random.Generator, loc: float = 0.0, scale: float = 1.0) -> np.ndarray:
    quantiles = (np.arange(n) + rng.uniform(0.2, 0.8, n)) / n
    return rng.permutation(norm.ppf(quantiles) * scale + loc)


def frame(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    income = stratified_normal(rows, rng, 50_000, 8_000)
    nulls = np.zeros(rows, dtype=bool)
    nulls[: rows // 20] = True  # 5% nulls
    income[rng.permutation(nulls)] = np.nan
    shares = [rows * 4 // 10, rows * 3 // 10, rows * 2 // 10]
    colors = np.repeat(COLORS, [*shares, rows - sum(shares)])
    return pd.DataFrame(
        {
            SHIFTED: stratified_normal(rows, rng, 600 + shift, 50),
            "age": stratified_normal(rows, rng, 40, 10),
            "income": income,
            "color": rng.permutation(colors),
        }
    )


def rows_of_day(day: int) -> int:
    """A different row count every day, so that counts per bucket are checked for real."""
    return 400 + 7 * day


def day_frame(day: int) -> pd.DataFrame:
    return frame(rows_of_day(day), seed=1000 + day, shift=50.0 if day >= SHIFT_DAY else 0.0)


def reference_frame() -> pd.DataFrame:
    return frame(2000, seed=7)


def wide_frame(rows: int, seed: int, shift: float, columns: int) -> pd.DataFrame:
    """A frame of ``columns`` columns for the benchmarks: every fifth one categorical (four values),
    the others normal with spreads 1 to 7; every tenth is shifted by ``shift``."""
    rng = np.random.default_rng(seed)
    data = {}
    for i in range(columns):
        if i % 5 == 4:
            data[f"cat_{i:02d}"] = rng.choice(["alpha", "beta", "gamma", "delta"], rows)
        else:
            data[f"num_{i:02d}"] = rng.normal(shift if i % 10 == 0 else 0.0, 1 + i % 7, rows)
    return pd.DataFrame(data)
