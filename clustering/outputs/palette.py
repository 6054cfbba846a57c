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

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property

import pandas as pd

from clustering.analysis.cohorts import INDEX, NAME_Z
from clustering.naming import readable, row_noun, rows_called
from clustering.settings import HIGHER_IS_BETTER

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

# How far a cell of a profile sits from the mean, on one scale for index scores and standard
# deviations: log2(index / 100) or the SD, clipped to +-2 (an index of 400 or 25, or 2 SD).
SCALE = 2.0


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


def _mix(dark: str, light: str, share: float) -> str:
    a, b = _rgb(dark), _rgb(light)
    return "#" + "".join(f"{round(x + (y - x) * share):02x}" for x, y in zip(a, b, strict=True))


def _rgb(color: str) -> tuple[int, int, int]:
    return int(color[1:3], 16), int(color[3:5], 16), int(color[5:7], 16)


def group_color(group: str) -> str:
    """The middle shade of a top group's hue family (the scatter's top-split panel)."""
    return shades(*FAMILIES.get(group, FAMILIES[""]), 1)[0]


@dataclass(frozen=True)
class Profiles:
    """How each residential cohort stands on each feature (rows: features, columns: stable
    sub_cluster ids).

    index: index scores (cohort mean / residential mean x 100), for the features measured by
        an index; NaN elsewhere.
    sd: the cohort's mean in standard deviations from the residential mean, every feature.
    measures: feature -> "index" | "sd" (clustering.analysis.cohorts.measure).
    directions: feature -> higher_is_worse | higher_is_better, for those that have one.
    labels: feature -> the words people read for it (FEATURE_LABELS); a feature without one
        reads as its name made readable.
    """

    index: pd.DataFrame
    sd: pd.DataFrame
    measures: Mapping[str, str]
    directions: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(self.index.index)

    def label(self, feature: str) -> str:
        """What people read for `feature`: "pct households in poverty"."""
        return self.labels.get(feature) or readable(feature)


@dataclass(frozen=True)
class Cell:
    """One feature of one cohort, as the heatmap and the report show it.

    text: "64" (an index) or "+1.2 SD"; "n/a" without a value.
    position: -SCALE..SCALE, how far from the mean and which way (NaN without a value).
    goodness: the position turned toward better (positive) or worse (negative); None for a
        feature without a direction, which is described as higher/lower only.
    reading: "better", "worse", "higher", "lower" or "at the mean" (empty without a value).
    strong: at least NAME_Z standard deviations from the mean: the bar for a feature to name
        a cohort, and the report's emphasis.
    """

    text: str
    position: float
    goodness: float | None
    reading: str
    strong: bool


def cell(profiles: Profiles, feature: str, sub_cluster: int) -> Cell:
    """Feature `feature` of cohort `sub_cluster`, measured and read (see Cell)."""
    sd = float(profiles.sd.at[feature, sub_cluster])
    if profiles.measures.get(feature) == INDEX:
        value = float(profiles.index.at[feature, sub_cluster])
        text, position = f"{value:.0f}", math.log2(max(value, 1e-9) / 100)
    else:
        value = sd
        shown = round(sd, 1) + 0.0  # + 0.0: no "-0.0"
        text, position = (f"{shown:+.1f} SD" if shown else "0.0 SD"), sd
    if math.isnan(value):
        return Cell("n/a", math.nan, None, "", False)
    position = max(-SCALE, min(SCALE, position))
    way = profiles.directions.get(feature)
    goodness = None if way is None else position * (1 if way == HIGHER_IS_BETTER else -1)
    shown = float(text.removesuffix(" SD"))  # the reading agrees with the number shown
    if shown == (0 if text.endswith("SD") else 100):
        reading = "at the mean"
    elif goodness is None:
        reading = "higher" if position > 0 else "lower"
    else:
        reading = "better" if goodness > 0 else "worse"
    return Cell(text, position, goodness, reading, abs(sd) >= NAME_Z)


@dataclass(frozen=True)
class CohortView:
    """What the pictures and the report know of a run's cohorts.

    table: the clusters table with stable ids, `cohort_name` and `cohort_stability`.
    profiles: how each residential cohort stands on each feature.
    transitions: changes since the previous run (None when there is no previous run).
    previous_run_id: the run compared against, if any.
    key_column: the column naming the rows (KEY_COLUMN).
    row_noun: what one row is (ROW_NOUN); None: from the key column.
    sizes: rows per cohort label over the whole table, when `table` is a sample of it (the
        warehouse engine); None: `table` holds every row.
    """

    table: pd.DataFrame
    profiles: Profiles
    transitions: pd.DataFrame | None = None
    previous_run_id: str | None = None
    key_column: str = "neighborhood"
    sizes: dict[str, int] | None = None
    row_noun: str | None = None

    @cached_property
    def styles(self) -> tuple[CohortStyle, ...]:
        """The cohorts' names and colours, computed once per run."""
        styles = cohort_styles(self.table)
        if self.sizes is None:
            return styles
        return tuple(replace(s, rows=self.sizes.get(s.label, s.rows)) for s in styles)

    @property
    def rows_called(self) -> str:
        """What the rows are called: "neighborhoods", "community areas"..."""
        return rows_called(self.key_column, self.row_noun)

    @property
    def noun(self) -> str:
        """What one row is called: "neighborhood", "community area"..."""
        return self.row_noun or row_noun(self.key_column)
