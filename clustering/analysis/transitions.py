"""Which neighborhoods changed cohort since the previous published run.

A neighborhood moved when its stable sub-cluster (or, for an excluded neighborhood, its
excluded type) differs from the previous run's; one that is new in the features table
"appeared", one that is no longer there "disappeared". A cohort that was only renamed, or an
excluded neighborhood regrouped within its type (those groups have no stable ids), is not a
move. Each transition also says whether the neighborhood was borderline in the previous run
(its fit_margin below BORDERLINE_MARGIN): a borderline neighborhood that moves is an expected
move, one that was not is a surprise worth a look. Because sub-cluster ids are matched run to
run (clustering.analysis.identity), an unchanged neighborhood keeps its id and is never listed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from clustering.analysis.assign import BORDERLINE_MARGIN
from clustering.analysis.model import DISTRESSED, STABLE

MOVED = "moved"
APPEARED = "appeared"
DISAPPEARED = "disappeared"

# The columns of neighborhood_cluster_transitions.csv and of TRANSITIONS_TABLE
# (clustering/schemas/transitions_table.json).
COLUMNS = (
    "neighborhood",
    "previous_run_id",
    "run_id",
    "previous_top_cluster",
    "previous_sub_cluster",
    "previous_cohort_name",
    "top_cluster",
    "sub_cluster",
    "cohort_name",
    "change",
    "previously_borderline",
)
# What the previous run's clusters CSV must provide.
PREVIOUS_COLUMNS = (
    "neighborhood",
    "top_cluster",
    "top_cluster_label",
    "sub_cluster",
    "excluded_type",
    "cohort_name",
)
# The previous rows' margin, when its run recorded one (runs before the model document did not).
PREVIOUS_MARGIN = "fit_margin"


@dataclass(frozen=True)
class Counts:
    """Moves of a run: all, and those between the Stable and Distressed groups each way."""

    moved: int
    stable_to_distressed: int
    distressed_to_stable: int
    appeared: int
    disappeared: int

    @property
    def between_top_groups(self) -> int:
        return self.stable_to_distressed + self.distressed_to_stable


def transitions(
    previous: pd.DataFrame, current: pd.DataFrame, previous_run_id: str, run_id: str
) -> tuple[pd.DataFrame, Counts]:
    """The transitions table (COLUMNS, ordered by neighborhood) and its counts.

    previous, current: PREVIOUS_COLUMNS of the previous run's rows (and PREVIOUS_MARGIN when
        it recorded one) and of this run's table.
    """
    keep = list(PREVIOUS_COLUMNS)
    before = previous[keep].assign(previous_margin=previous.get(PREVIOUS_MARGIN, np.nan))
    both = before.merge(
        current[keep], on="neighborhood", how="outer", suffixes=("_old", ""), indicator=True
    )
    # As floats, so that ids read back from a CSV (int64) compare with this run's (Int64).
    old_sub, new_sub = (both[c].astype("float64") for c in ("sub_cluster_old", "sub_cluster"))
    changed = (old_sub != new_sub) | (both["excluded_type_old"] != both["excluded_type"])
    side = both["_merge"]
    moved = (side == "both") & changed
    rows = both[moved | (side != "both")].sort_values("neighborhood", kind="stable")
    change = rows["_merge"].map({"both": MOVED, "right_only": APPEARED, "left_only": DISAPPEARED})
    out = pd.DataFrame(
        {
            "neighborhood": rows["neighborhood"].astype(object),
            "previous_run_id": previous_run_id,
            "run_id": run_id,
            "previous_top_cluster": rows["top_cluster_old"].astype("Int64"),
            "previous_sub_cluster": rows["sub_cluster_old"].astype("Int64"),
            "previous_cohort_name": rows["cohort_name_old"].astype(object),
            "top_cluster": rows["top_cluster"].astype("Int64"),
            "sub_cluster": rows["sub_cluster"].astype("Int64"),
            "cohort_name": rows["cohort_name"].astype(object),
            "change": change.astype(object),
            "previously_borderline": _borderline(rows["previous_margin"]),
        },
        columns=list(COLUMNS),
    ).reset_index(drop=True)
    labels = both.loc[moved, ["top_cluster_label_old", "top_cluster_label"]]
    pairs = list(zip(labels["top_cluster_label_old"], labels["top_cluster_label"], strict=True))
    counts = Counts(
        moved=int(moved.sum()),
        stable_to_distressed=pairs.count((STABLE, DISTRESSED)),
        distressed_to_stable=pairs.count((DISTRESSED, STABLE)),
        appeared=int((side == "right_only").sum()),
        disappeared=int((side == "left_only").sum()),
    )
    return out, counts


def _borderline(margins: pd.Series) -> pd.Series:
    """Whether each previous margin was below BORDERLINE_MARGIN; null where there was none
    (the row was excluded, had not appeared yet, or its run predates margins)."""
    values = margins.astype("float64")
    return pd.Series(values < BORDERLINE_MARGIN, dtype="boolean").where(values.notna())
