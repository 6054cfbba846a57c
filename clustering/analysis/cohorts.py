"""What each cohort is: its profile (index scores or standard deviations) and a descriptive name.

As in geodemographic classifications, a cohort is described by index scores: its mean of a
feature divided by the mean of all residential neighborhoods, times 100 (100 = typical, 150 =
half again as much). A ratio means something only for a feature that never takes a negative
value (a rate, a count, a price): a signed feature (a year-on-year change) is described in
standard deviations from the residential mean instead, and so is one whose mean is not
positive. The name takes the two or three features on which the cohort stands out
most, measured in standard deviations from the residential mean (the cohort's centroid in the
run's scaled space, so a feature with a small spread is not drowned by one with a large
spread), and turns them into words behind the Stable/Distressed label:
"Distressed: high vacancy, low owner occupancy". The notebook's features have words of their
own; any other feature reads as its label (FEATURE_LABELS, else its name made readable:
MEDIAN_INCOME is "median income") after "better"/"worse" where FEATURE_DIRECTIONS knows which
way is better ("Stable: better median income"), and "higher"/"lower" where it does not. A
label given for one of the notebook's features wins over its own words.

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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from clustering.naming import readable
from clustering.settings import HIGHER_IS_BETTER

# A feature names a cohort when the cohort's mean is this many standard deviations away from
# the residential mean ...
NAME_Z = 0.5
# ... and keeps naming it, once named, while it stays this far away in the same direction.
KEEP_Z = 0.25
# Words in a name: two, a third only to tell two cohorts apart.
WORDS = 2
MAX_WORDS = 3

# How a feature is described: an index score, or standard deviations from the mean.
INDEX = "index"
SD = "sd"

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

    index_scores: cohort mean / residential mean x 100 per used feature described by an
        index (see `measure`); the others are left out.
    sd_scores: per used feature, the cohort's mean in standard deviations from the
        residential mean (its centroid in the run's scaled space): how signed features are
        described, and what names and emphasis go by.
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
    sd_scores: dict[str, float] = field(default_factory=dict)
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


def words_for(
    feature: str,
    leaning: str,
    directions: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> str:
    """Words for a feature above ("high") or below ("low") the residential mean. The
    notebook's features have their own ("high vacancy") unless `labels` (FEATURE_LABELS)
    names them; another reads as its label or its name made readable, after
    "better"/"worse" when `directions` (feature -> higher_is_worse | higher_is_better) knows
    which way is better, else after "higher"/"lower": "lower tree canopy pct"."""
    name = (labels or {}).get(feature)
    if name is None and feature in FEATURE_WORDS:
        above, below = FEATURE_WORDS[feature]
        return above if leaning == "high" else below
    name = name or readable(feature)
    way = (directions or {}).get(feature)
    if way is None:
        return f"{'higher' if leaning == 'high' else 'lower'} {name}"
    better = (leaning == "high") == (way == HIGHER_IS_BETTER)
    return f"{'better' if better else 'worse'} {name}"


def name_cohorts(
    profiles: list[Profile],
    previous: Mapping[int, PreviousName],
    overrides: Mapping[int, str],
    directions: Mapping[str, str] | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[int, Naming]:
    """A unique name for each profile's cohort (by stable id); see the module docstring.

    previous: matched cohorts' names in the previous run, by stable id.
    overrides: names set by LABEL_OVERRIDES, by stable id (ids not in `profiles` are ignored).
    directions: feature -> higher_is_worse | higher_is_better (see `words_for`).
    labels: feature -> the words FEATURE_LABELS gives it (see `words_for`).
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
    names |= _generate(fresh, taken, Words(directions or {}, labels or {}))
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


@dataclass(frozen=True)
class Words:
    """How features are put in words: their directions and their FEATURE_LABELS."""

    directions: Mapping[str, str]
    labels: Mapping[str, str]


def _generate(profiles: list[Profile], taken: set[str], words: Words) -> dict[int, Naming]:
    """Names from the most distinctive features, with words added where names would clash."""
    ranked = {p.sub_cluster: _ranked(p) for p in profiles}
    labels = {p.sub_cluster: p.top_label for p in profiles}
    count = {}
    for p in profiles:
        strong = sum(1 for f, _ in ranked[p.sub_cluster] if abs(p.z[f]) >= NAME_Z)
        count[p.sub_cluster] = max(1, min(WORDS, strong))

    def build(sub: int) -> str:
        chosen = ranked[sub][: count[sub]]
        said = ", ".join(words_for(f, d, words.directions, words.labels) for f, d in chosen)
        return f"{labels[sub]}: {said or 'close to average'}"

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


def measure(minimum: float, mean: float) -> str:
    """How a feature is described, from its smallest value in the table and its residential
    mean: by an index when it never goes negative and its mean is positive, in standard
    deviations otherwise (a ratio to a signed or non-positive mean says nothing)."""
    return INDEX if minimum >= 0 and mean > 0 else SD


def index_scores(
    cohort_means: Mapping[str, float], overall: Mapping[str, float], features: Iterable[str]
) -> dict:
    """Cohort mean / residential mean x 100 for each of `features` (those `measure` describes
    by an index), rounded to one decimal; a cohort without a value of a feature has none."""
    return {
        feature: round(float(cohort_means[feature]) / overall[feature] * 100, 1)
        for feature in features
        if cohort_means[feature] == cohort_means[feature]  # NaN: no value
    }
