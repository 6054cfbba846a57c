"""run.json: what the run read, decided and wrote (docs/analysis.md, "Outputs")."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict
from datetime import UTC, datetime
from importlib.metadata import version

from clustering import __version__
from clustering.naming import MANIFEST
from clustering.stages.context import Analysed, Run

VERSIONED = ("numpy", "pandas", "scikit-learn", "scipy", "matplotlib")


def manifest(run: Run, done: Analysed, timings: dict[str, float], prefix) -> dict:
    """run.json as every engine writes it; the counts are the whole table's."""
    from clustering.analysis.identity import manifest_entries

    request, settings, identity = run.request, run.settings, done.identity
    result = identity.result
    return {
        "run_id": run.run_id,
        "trigger": request.trigger,
        "event_id": request.event_id,
        "reason": request.reason,
        "dry_run": request.dry_run,
        "started_at": run.started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "input": _input_entry(settings, result, done.counts),
        "outputs": {
            "artifacts": prefix,
            "clusters_table": settings.clusters_table,
            "files": [*(name for name in done.files if name != MANIFEST), MANIFEST],
        },
        "features": _features_entry(result.features, identity.measures, settings.analysis),
        "settings": asdict(settings.analysis)
        | {"feature_directions": settings.analysis.directions},
        "silhouette": {
            "method": "sampled" if result.silhouette_sample_size else "exact",
            "sample_size": result.silhouette_sample_size,
        },
        # A large table's K searches saw a key-hashed sample; the final fits saw every row.
        "k_search": {
            "method": "sampled" if result.search_sample_size else "every row",
            "sample_size": result.search_sample_size,
            "diagnostic_sample_size": result.diagnostic_sample_size,
        },
        "diagnostics": _diagnostics_entry(result.diagnostics),
        **_group_entries(result),
        "summary": _summary(identity, settings.analysis, done.counts),
        **manifest_entries(identity),
        "model": done.model,
        "label_overrides": {str(sub): name for sub, name in settings.label_overrides},
        "warnings": [*done.input.warnings, *result.warnings, *identity.warnings],
        "notes": list(done.input.notes),
        "timings_seconds": timings,
        "versions": _versions(),
    }


def json_bytes(document: dict) -> bytes:
    return (json.dumps(document, indent=2, default=str) + "\n").encode()


def _summary(identity, analysis, counts) -> list[dict]:
    """The notebook's closing table; with a sampled fit (`counts`) each cohort's count is
    its rows over the whole table, not the sample's."""
    summary = json.loads(identity.result.summary.to_json(orient="records"))
    if counts is None:
        return summary
    counted = analysis.rows_called.replace(" ", "_")
    rows = {f"Cluster {c.sub_cluster}": c.rows for c in identity.cohorts}
    for entry in summary:
        if counted in entry and entry.get("cluster_label") in rows:
            entry[counted] = rows[entry["cluster_label"]]
    return summary


def _features_entry(features, measures: dict[str, str], analysis) -> dict:
    """Which features the run used, and how each is described (index or SD) and read."""
    return {
        "used": list(features.used),
        "missing": list(features.missing),
        "all_blank": list(features.all_blank),
        # "index": cohort mean / residential mean x 100; "sd": standard deviations from the
        # residential mean (features that take negative values, or whose mean is not positive).
        "measures": measures,
        "directions": {f: analysis.directions.get(f) for f in features.used},
    }


def _input_entry(settings, result, counts) -> dict:
    from clustering.table import unmatched_exclusions

    unmatched = unmatched_exclusions(result.table[settings.analysis.key_column], settings.analysis)
    entry = {
        "source": settings.features_source or "built-in sample",
        # Exclusion names that match no row: typos, or names the table spells otherwise.
        "unmatched_exclusions": [asdict(u) for u in unmatched],
        "boundaries": settings.boundaries_source,
    }
    if counts is None:
        by_type = result.table["excluded_type"].value_counts()
        return entry | {
            "rows": len(result.table),
            "residential_rows": int(result.residential.sum()),
            "excluded_rows": len(result.excluded),
            "rows_by_type": {str(k): int(v) for k, v in by_type.items()},
        }
    by_type = {g.excluded_type: g.size for g in result.excluded_groups}
    residential = sum(g.size for g in result.top_groups)
    return entry | {
        "rows": counts.rows,
        "residential_rows": residential,
        "excluded_rows": sum(by_type.values()),
        "rows_by_type": {t: n for t, n in {"Residential": residential, **by_type}.items() if n},
        "sample_rows": len(result.table),
    }


def _diagnostics_entry(diagnostics) -> dict:
    from clustering.analysis.model import TOP_K

    return {
        "note": f"K_MIN..K_MAX is a diagnostic only: the top split is always K={TOP_K}, as "
        "in the notebook; best_k is the K with the highest silhouette",
        "top_split_k": TOP_K,
        "k": list(diagnostics.ks),
        "inertia": [round(v, 6) for v in diagnostics.inertias],
        "silhouette": [round(v, 6) for v in diagnostics.silhouettes],
        "best_k": diagnostics.best_k,
    }


def _group_entries(result) -> dict:
    """The top groups' and the excluded groups' sizes and chosen Ks."""
    return {
        "top_groups": [
            {
                "top_cluster": g.top,
                "label": g.label,
                "rows": g.size,
                "sub_k": g.sub_k,
                "silhouette_by_k": _scores(g.search),
            }
            for g in result.top_groups
        ],
        "excluded_groups": [
            {
                "excluded_type": g.excluded_type,
                "rows": g.size,
                "k": g.k,
                "note": g.note,
                "silhouette_by_k": _scores(g.search),
            }
            for g in result.excluded_groups
        ],
    }


def _versions() -> dict[str, str]:
    return {
        "neighborhood-clusters": __version__,
        "python": platform.python_version(),
        # From the installed metadata: importing matplotlib here would undo the chart
        # process's head start.
        **{name: version(name) for name in VERSIONED},
    }


def _scores(search) -> dict[str, float] | None:
    if search is None:
        return None
    return {str(k): round(s, 6) for k, s in zip(search.ks, search.silhouettes, strict=True)}
