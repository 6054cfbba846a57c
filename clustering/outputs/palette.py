"""One visual language for every picture of a run: each cohort's name and colour.

A cohort is a residential sub-cluster (named "<stable id> · <cohort_name>") or an excluded
group (named by its group). Each top group gets a hue family, its cohorts shades of that hue
in id order (blues for Stable, oranges for Distressed), and the excluded groups greys with a
distinct hatch each, so a reader tells "another kind of place" from "not clustered" at a
glance. The scatter, the heatmap, the map and the report all take their names and colours from
`cohort_styles`, so the same cohort looks the same everywhere.

Pure Python: the parent process builds the styles without importing matplotlib.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property

import pandas as pd

EXCLUDED = "Excluded"
# Dark and light end of each top group's hue family; other labels take the last family.
FAMILIES: dict[str, tuple[str, str]] = {
    "Stable": ("#08519c", "#9ecae1"),
    "Distressed": ("#a63603", "#fdae6b"),
    "": ("#54278f", "#bcbddc"),
}
EXCLUDED_GREYS = ("#8c8c8c", "#d4d4d4")
# Matplotlib hatch patterns, one per excluded group (cycled beyond six).
HATCHES = ("///", "\\\\\\", "xxx", "...", "+++", "ooo")
# A neighborhood with a boundary but no row of the table: outline only.
NO_ROW_EDGE = "#7f7f7f"

# Which way is better for the notebook's features, stated next to them on the heatmap so a
# high owner-occupancy index does not read as alarming. Features not listed state nothing.
HIGHER_IS_BETTER = frozenset(
    {
        "owner_occupancy_rate",
        "rehab_to_vacant_ratio",
        "permit_value_per_capita",
        "permit_recent_5yr",
        "median_assessed_value",
        "avg_assessed_value",
    }
)
HIGHER_IS_WORSE = frozenset(
    {
        "housing_vacancy_rate",
        "crime_per_capita",
        "arrest_per_capita",
        "crime_yoy_change",
        "vacant_notices_per_unit",
        "requests_311_per_capita",
        "requests_311_blight",
    }
)


@dataclass(frozen=True)
class CohortStyle:
    """How one cohort is named and drawn.

    label: the name every picture shows ("12 · Distressed: high vacancy, ..." for a
        residential cohort, the group name for an excluded one).
    color: "#rrggbb"; hatch: a matplotlib hatch for excluded groups, None otherwise.
    group: the top group label (Stable, Distressed) or "Excluded".
    sub_cluster: the stable id, or None for an excluded group.
    rows: neighborhoods in the cohort.
    """

    label: str
    color: str
    hatch: str | None
    group: str
    sub_cluster: int | None
    rows: int


def cohort_labels(table: pd.DataFrame) -> pd.Series:
    """Each row's cohort label: "<sub_cluster> · <cohort_name>" for residential rows, the
    cohort_name (the excluded group) for the others."""
    residential = table["top_cluster_label"] != EXCLUDED
    ids = table["sub_cluster"].astype("int64").astype(str)
    names = table["cohort_name"].astype(str)
    return (ids + " · " + names).where(residential, names)


def cohort_styles(table: pd.DataFrame) -> tuple[CohortStyle, ...]:
    """Every cohort of the table, styled: the residential cohorts by top group then id, then
    the excluded groups by name."""
    labels = cohort_labels(table)
    counts = labels.value_counts()
    residential = table["top_cluster_label"] != EXCLUDED
    cohorts = (
        table.loc[residential, ["top_cluster", "top_cluster_label", "sub_cluster"]]
        .assign(label=labels[residential])
        .drop_duplicates("sub_cluster")
        .sort_values(["top_cluster", "sub_cluster"])
    )
    styles = []
    for group, members in cohorts.groupby("top_cluster_label", sort=False):
        dark, light = FAMILIES.get(str(group), FAMILIES[""])
        for color, row in zip(shades(dark, light, len(members)), members.itertuples(), strict=True):
            styles.append(
                CohortStyle(
                    row.label, color, None, str(group), int(row.sub_cluster), int(counts[row.label])
                )
            )
    excluded = sorted(set(labels[~residential]))
    for index, (label, color) in enumerate(
        zip(excluded, shades(*EXCLUDED_GREYS, len(excluded)), strict=True)
    ):
        hatch = HATCHES[index % len(HATCHES)]
        styles.append(CohortStyle(label, color, hatch, EXCLUDED, None, int(counts[label])))
    return tuple(styles)


def shades(dark: str, light: str, n: int) -> list[str]:
    """n colours evenly from `dark` to `light` (the middle of the two for n = 1)."""
    if n == 1:
        return [_mix(dark, light, 0.5)]
    return [_mix(dark, light, i / (n - 1)) for i in range(n)]


def direction(feature: str) -> str:
    """How to read a feature's index: "higher is better", "higher is worse" or ""."""
    if feature in HIGHER_IS_BETTER:
        return "higher is better"
    if feature in HIGHER_IS_WORSE:
        return "higher is worse"
    return ""


def _mix(dark: str, light: str, share: float) -> str:
    a, b = _rgb(dark), _rgb(light)
    return "#" + "".join(f"{round(x + (y - x) * share):02x}" for x, y in zip(a, b, strict=True))


def _rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def group_color(group: str) -> str:
    """The middle shade of a top group's hue family (the scatter's top-split panel)."""
    return shades(*FAMILIES.get(group, FAMILIES[""]), 1)[0]


@dataclass(frozen=True)
class CohortView:
    """What the pictures and the report know of a run's cohorts.

    table: the clusters table with stable ids, `cohort_name` and `cohort_stability`.
    index: index scores, features x residential sub_cluster (cohort mean / residential mean
        x 100; NaN where the residential mean is not positive).
    transitions: changes since the previous run (None when there is no previous run).
    previous_run_id: the run compared against, if any.
    sizes: rows per cohort label over the whole table, when `table` is a sample of it (the
        warehouse engine); None: `table` holds every row.
    """

    table: pd.DataFrame
    index: pd.DataFrame
    transitions: pd.DataFrame | None = None
    previous_run_id: str | None = None
    sizes: dict[str, int] | None = None

    @cached_property
    def styles(self) -> tuple[CohortStyle, ...]:
        """The cohorts' names and colours, computed once per run."""
        styles = cohort_styles(self.table)
        if self.sizes is None:
            return styles
        return tuple(replace(s, rows=self.sizes.get(s.label, s.rows)) for s in styles)
