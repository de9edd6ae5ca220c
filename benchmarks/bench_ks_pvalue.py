"""The KS p-value of the drift scoring against whylogs' own, over a grid of (D, n): the largest
difference, whether the drift category at whylogs' thresholds (0.05, 0.15) ever differs, and the
CPU time of each.

whylogs' KS test takes ``scipy.stats.kstwo.sf(D, round(m n / (m + n)))``; the project's
``column_stats.ks_pvalues`` evaluates the same distribution (see its docstring). The grid: every n
from 1 to 299, then 40 sizes up to 100,000; for each, 90 statistics with sqrt(n) D from 0 to 1.6
(p from 1 to about 0.01: where the categories change), 10 more in the tail for n up to 20,000, and
the special points (0, 1, 1/2n, 1/n, 1 - 1/n, 0.5).

Run: ``python benchmarks/bench_ks_pvalue.py`` (a few minutes: scipy's Durbin matrix at large n is
the slow part).
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("WHYLOGS_NO_ANALYTICS", "True")

import numpy as np  # noqa: E402
from scipy.stats import kstwo  # noqa: E402

from whylogs_songbird.column_stats import KS_EXACT_MAX_N, ks_pvalues  # noqa: E402


def category(p: np.ndarray) -> np.ndarray:
    return np.where(p < 0.05, 0, np.where(p < 0.15, 1, 2))


def main() -> None:
    rng = np.random.default_rng(0)
    sizes = np.unique(np.concatenate([np.arange(1, 300), np.geomspace(300, 1e5, 40).round()]))
    worst, where, differing, points = 0.0, (0.0, 0.0, 0.0), 0, 0
    theirs_s = ours_s = 0.0
    by_size: dict[str, float] = {}
    for n in sizes.astype(float):
        c = [np.linspace(0, 1.6, 80), rng.uniform(0, 1.6, 10)] + ([np.linspace(1.6, 4, 10)] if n <= 20_000 else [])
        d = np.clip(np.concatenate([np.concatenate(c) / np.sqrt(n), [0, 1, 0.5 / n, 1 / n, 1 - 1 / n, 0.5]]), 0, 1)
        began = time.process_time()
        theirs = kstwo.sf(d, n)
        theirs_s += time.process_time() - began
        began = time.process_time()
        ours = ks_pvalues(d, np.full(d.shape, n))
        ours_s += time.process_time() - began
        diff = np.abs(ours - theirs)
        i = int(np.argmax(diff))
        if diff[i] > worst:
            worst, where = float(diff[i]), (n, float(d[i]), float(theirs[i]))
        band = (
            "n <= 140" if n <= KS_EXACT_MAX_N else "141-999" if n < 1000 else "1,000-9,999" if n < 1e4 else ">= 10,000"
        )
        by_size[band] = max(by_size.get(band, 0.0), float(diff.max()))
        differing += int(np.sum(category(ours) != category(theirs)))
        points += len(d)
    print(f"{points:,} points (D, n), n from 1 to {int(sizes[-1]):,}")
    print(
        f"largest |p - whylogs' p|: {worst:.3g} at n = {where[0]:.0f}, D = {where[1]:.4g} (whylogs' p {where[2]:.4f});"
    )
    for band, value in by_size.items():
        print(f"  largest at {band}: {value:.3g}")
    print(f"drift category different from whylogs': {differing} of {points:,}")
    print(f"CPU: whylogs' (scipy kstwo.sf) {theirs_s:.1f} s, ks_pvalues {ours_s:.1f} s")


if __name__ == "__main__":
    main()
