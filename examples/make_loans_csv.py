"""Write ``examples/loans.csv``, the sample the docs' commands use: 300 made-up loan applications
over one week of May 2024, with an ``applied_at`` timestamp and a ``region`` column to segment on.

Deterministic (seeded): ``python examples/make_loans_csv.py`` writes the very file that is shipped
(tests/test_docs.py checks it). The rows come from the demo's generator (`loan_applications`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from whylogs_songbird.demo import SEED, loan_applications

ROWS = 300
REGIONS = ("north", "south", "east", "west")
PATH = Path(__file__).with_name("loans.csv")


def loans() -> pd.DataFrame:
    """The sample's rows: the demo's loan applications plus when and where each was made."""
    rng = np.random.default_rng(SEED + 100)
    frame = loan_applications(ROWS, seed=SEED + 100)
    seconds = np.sort(rng.integers(0, 7 * 86_400, ROWS))
    applied = pd.Timestamp("2024-05-01T00:00:00Z") + pd.to_timedelta(seconds, unit="s")
    frame.insert(0, "applied_at", applied.strftime("%Y-%m-%dT%H:%M:%SZ"))
    frame.insert(1, "region", rng.choice(REGIONS, ROWS, p=(0.3, 0.3, 0.25, 0.15)))
    return frame


def csv_text() -> str:
    return loans().to_csv(index=False, lineterminator="\n")


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else PATH
    target.write_text(csv_text(), encoding="utf-8")
    print(f"wrote {target}")
