"""How well the K searches on a key-hashed sample agree with searches over every row.

For each table (the built-in sample's shape, `python -m clustering sample`), the analysis runs
twice: as the product runs it (K searches on SEARCH_SAMPLE_ROWS hashed rows above that size)
and with the searches over every row. It prints, per table, the K each search chose (the K
diagnostic's best and each top group's sub-K), the adjusted Rand index of the two final
partitions (top split and sub-clusters), the sampled partition's within-cohort sum of squares
over the full search's (below 1: the sampled one is the tighter of the two local optima) and
both times. The figures are in docs/analysis.md.

    .venv/bin/python tools/search_agreement.py 50000:1 100000:2 200000:3
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sklearn.metrics import adjusted_rand_score

from bench.warehouse_case import within_cohorts
from clustering.analysis import search_sample
from clustering.analysis.model import cluster
from clustering.analysis.sample import make_sample
from clustering.settings import AnalysisSettings
from clustering.table import validate_features


def chosen(result) -> str:
    subs = "/".join(str(group.sub_k) for group in result.top_groups)
    return f"K {result.diagnostics.best_k}, sub-K {subs}"


def _within(result) -> float:
    """The residential rows' within-cohort sum of squares, in the scaled space."""
    return within_cohorts(result.scaled, result.table.loc[result.residential, "sub_cluster"])


def compare(rows: int, seed: int, settings: AnalysisSettings) -> str:
    frame = validate_features(make_sample(rows, random_state=seed), settings, "sample").frame
    size = search_sample.SEARCH_SAMPLE_ROWS
    started = time.perf_counter()
    sampled = cluster(frame, settings)
    sampled_s = time.perf_counter() - started
    search_sample.SEARCH_SAMPLE_ROWS = rows + 1
    try:
        started = time.perf_counter()
        full = cluster(frame, settings)
        full_s = time.perf_counter() - started
    finally:
        search_sample.SEARCH_SAMPLE_ROWS = size
    top = adjusted_rand_score(full.table["top_cluster"], sampled.table["top_cluster"])
    sub = adjusted_rand_score(full.table["sub_cluster"], sampled.table["sub_cluster"])
    same = "equal" if chosen(full) == chosen(sampled) else "DIFFERENT"
    tighter = _within(sampled) / _within(full)
    return (
        f"{rows:>8,} rows (seed {seed}): sampled {chosen(sampled)}; every row {chosen(full)} "
        f"({same}); ARI top {top:.4f}, sub-clusters {sub:.4f}; within-cohort SS "
        f"sampled/full {tighter:.5f}; "
        f"{sampled_s:.1f} s sampled, {full_s:.1f} s every row"
    )


def main(argv: list[str]) -> int:
    settings = AnalysisSettings()
    for spec in argv or ["50000:1", "100000:2", "200000:3"]:
        rows, _, seed = spec.partition(":")
        print(compare(int(rows), int(seed or 0), settings), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
