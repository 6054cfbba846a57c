"""What each cohort is: its profile (index scores) and a descriptive name.

As in geodemographic classifications, a cohort is described by index scores: its mean of a
feature divided by the mean of all residential neighborhoods, times 100 (100 = typical, 150 =
half again as much). The name takes the two or three features on which the cohort stands out
most, measured in standard deviations from the residential mean (the cohort's centroid in the
run's scaled space, so a feature with a small spread is not drowned by one with a large
spread), and turns them into words behind the Stable/Distressed label:
"Distressed: high vacancy, low owner occupancy".

Names are
- deterministic: the same profile gives the same name, ties broken by the feature order;
- unique within a run: a name two cohorts would share gets a further word, then the cohort id;
- stable: a cohort matched to the previous run keeps its previous name while the features that
  name states still hold, i.e. still lean the same way by at least KEEP_Z standard deviations
  (a lower bar than NAME_Z, the bar to be named after a feature, so that a profile that barely
  moves never flips its name back and forth);
- overridable: LABEL_OVERRIDES (stable sub-cluster id -> name) wins over all of the above.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

# A feature names a cohort when the cohort's mean is this many standard deviations away from
# the residential mean ...
NAME_Z = 0.5
# ... and keeps naming it, once named, while it stays this far away in the same direction.
KEEP_Z = 0.25
# Words in a name: two, a third only to tell two cohorts apart.
WORDS = 2
MAX_WORDS = 3

GENERATED = "generated"
KEPT = "kept"
OVERRIDE = "override"

# Words for the notebook's 15 features: (when above the mean, when below).
FEATURE_WORDS: dict[str, tuple[str, str]] = {
    "population": ("large population", "small population"),
    "med_age": ("older residents", "younger residents"),
    "housing_vacancy_rate": ("high vacancy", "low vacancy"),
    "owner_occupancy_rate": ("high owner occupancy", "low owner occupancy"),
    "crime_per_capita": ("high crime", "low crime"),
    "arrest_per_capita": ("many arrests", "few arrests"),
    "crime_yoy_change": ("rising crime", "falling crime"),
    "vacant_notices_per_unit": ("many vacant notices", "few vacant notices"),
    "rehab_to_vacant_ratio": ("much rehab of vacants", "little rehab of vacants"),
    "permit_value_per_capita": ("high permit investment", "low permit investment"),
    "permit_recent_5yr": ("many recent permits", "few recent permits"),
    "requests_311_per_capita": ("many 311 requests", "few 311 requests"),
    "requests_311_blight": ("many blight requests", "few blight requests"),
    "median_assessed_value": ("high property values", "low property values"),
    "avg_assessed_value": ("high average assessments", "low average assessments"),
}


@dataclass(frozen=True)
class Cohort:
    """One residential sub-cluster of a run, under its stable id.

    index_scores: cohort mean / residential mean x 100 per used feature (features whose
        residential mean is not positive have no meaningful index and are left out).
    stability: mean bootstrap Jaccard (clustering.analysis.stability), NaN until computed.
    centroid: mean of the values the clustering saw (imputed, winsorized; before scaling), in
        the feature's own units; this is what the next run matches against.
    name_source: "generated", "kept" (the previous run's name still holds) or "override".
    name_features: the (feature, "high"|"low") pairs the name states; empty for overrides.
    """

    top_cluster: int
    top_label: str
    sub_cluster: int
    name: str
    rows: int
    stability: float
    index_scores: dict[str, float]
    centroid: dict[str, float] = field(default_factory=dict)
    name_source: str = GENERATED
    name_features: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Profile:
    """What naming needs of a cohort: its id, top label and z-scores by feature (in the
    order of the run's features)."""

    sub_cluster: int
    top_label: str
    z: dict[str, float]


@dataclass(frozen=True)
class PreviousName:
    """A matched cohort's name in the previous run and what it stated."""

    name: str
    top_label: str
    source: str
    features: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Naming:
    name: str
    source: str
    features: tuple[tuple[str, str], ...]


def words_for(feature: str, direction: str) -> str:
    """Human words for a feature above ("high") or below ("low") the residential mean; columns
    without a mapping read as their name: "high tree canopy pct" for tree_canopy_pct."""
    if feature in FEATURE_WORDS:
        above, below = FEATURE_WORDS[feature]
        return above if direction == "high" else below
    return f"{direction} {' '.join(feature.replace('_', ' ').split())}"


def name_cohorts(
    profiles: list[Profile],
    previous: Mapping[int, PreviousName],
    overrides: Mapping[int, str],
) -> dict[int, Naming]:
    """A unique name for each profile's cohort (by stable id); see the module docstring.

    previous: matched cohorts' names in the previous run, by stable id.
    overrides: names set by LABEL_OVERRIDES, by stable id (ids not in `profiles` are ignored).
    """
    names: dict[int, Naming] = {}
    for profile in profiles:
        if profile.sub_cluster in overrides:
            names[profile.sub_cluster] = Naming(overrides[profile.sub_cluster], OVERRIDE, ())
    taken = {n.name for n in names.values()}
    for profile in profiles:
        before = previous.get(profile.sub_cluster)
        if profile.sub_cluster in names or before is None or not _still_holds(before, profile):
            continue
        if before.name not in taken:
            names[profile.sub_cluster] = Naming(before.name, KEPT, before.features)
            taken.add(before.name)
    fresh = [p for p in profiles if p.sub_cluster not in names]
    names |= _generate(fresh, taken)
    return names


def _still_holds(before: PreviousName, profile: Profile) -> bool:
    if before.source == OVERRIDE or before.top_label != profile.top_label or not before.features:
        return False
    return all(
        feature in profile.z and _leans(profile.z[feature], direction, KEEP_Z)
        for feature, direction in before.features
    )


def _leans(z: float, direction: str, bar: float) -> bool:
    return z >= bar if direction == "high" else z <= -bar


def _ranked(profile: Profile) -> list[tuple[str, str]]:
    """Features by distance from the mean, largest first (stable sort: ties keep the feature
    order), with their direction."""
    order = sorted(profile.z, key=lambda f: -abs(profile.z[f]))
    return [(f, "high" if profile.z[f] > 0 else "low") for f in order if profile.z[f] != 0]


def _generate(profiles: list[Profile], taken: set[str]) -> dict[int, Naming]:
    """Names from the most distinctive features, with words added where names would clash."""
    ranked = {p.sub_cluster: _ranked(p) for p in profiles}
    labels = {p.sub_cluster: p.top_label for p in profiles}
    count = {}
    for p in profiles:
        strong = sum(1 for f, _ in ranked[p.sub_cluster] if abs(p.z[f]) >= NAME_Z)
        count[p.sub_cluster] = max(1, min(WORDS, strong))

    def build(sub: int) -> str:
        chosen = ranked[sub][: count[sub]]
        words = ", ".join(words_for(f, d) for f, d in chosen) or "close to average"
        return f"{labels[sub]}: {words}"

    while True:
        built = {sub: build(sub) for sub in ranked}
        seen = Counter(built.values())
        clashing = [s for s, n in built.items() if seen[n] > 1 or n in taken]
        growing = [s for s in clashing if count[s] < min(MAX_WORDS, len(ranked[s]))]
        if not growing:
            break
        for sub in growing:
            count[sub] += 1
    return {
        sub: Naming(
            f"{name} (Cluster {sub})" if sub in clashing else name,
            GENERATED,
            tuple(ranked[sub][: count[sub]]),
        )
        for sub, name in built.items()
    }


def index_scores(cohort_means: Mapping[str, float], overall: Mapping[str, float]) -> dict:
    """Cohort mean / residential mean x 100 per feature, rounded to one decimal; features
    whose residential mean is not positive (a signed change, an all-zero column) are left out:
    a ratio to them means nothing."""
    return {
        feature: round(float(cohort_means[feature]) / mean * 100, 1)
        for feature, mean in overall.items()
        if mean > 0 and cohort_means[feature] == cohort_means[feature]  # NaN: no value
    }
