"""Command line: `python -m clustering run | sample | send-event`.

Exit codes: 0 success, 2 bad input or settings (one `error:` line, no traceback), 1 for the
unexpected. Progress goes to stderr, one line per stage; the result summary to stdout.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Sequence

from clustering.errors import InputError
from clustering.job import one_line
from clustering.settings import (
    AnalysisSettings,
    JobSettings,
    parse_label_overrides,
    parse_name_list,
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    defaults = AnalysisSettings()
    parser = _Parser(prog="python -m clustering", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = commands.add_parser("run", help="cluster a features table and write the artifacts")
    run.add_argument("--features", metavar="SRC",
                     help="features table: a .csv/.parquet path, gs://bucket/file or "
                          "bq://project.dataset.table (default: the built-in sample)")  # fmt: skip
    run.add_argument("--out", metavar="DEST", default="output",
                     help="artifacts folder or gs://bucket/prefix (default: output)")  # fmt: skip
    run.add_argument("--clusters-table", metavar="DEST",
                     help="also replace this table: bq://project.dataset.table, or a "
                          ".csv/.parquet path or gs:// object")  # fmt: skip
    run.add_argument(
        "--boundaries",
        metavar="SRC",
        help="GeoJSON of the neighborhoods (path or gs://...); adds cluster_map.png",
    )
    run.add_argument(
        "--runs-table",
        metavar="DEST",
        help="append the run to this history: bq://... or a .jsonl path",
    )
    run.add_argument(
        "--transitions-table",
        metavar="DEST",
        help="append the neighborhoods that changed cohort since the previous run to this "
        "table: bq://... or a local .csv/.jsonl path (default: none; env TRANSITIONS_TABLE)",
    )
    run.add_argument(
        "--label-overrides",
        metavar="JSON",
        help='JSON object of cohort id (sub_cluster) to name, e.g. \'{"11": "Rowhouse core"}\'; '
        "these names win over the generated ones (default: {}; env LABEL_OVERRIDES)",
    )
    run.add_argument("--min-population", type=int, default=defaults.min_population)
    run.add_argument("--k-min", type=int, default=defaults.k_min)
    run.add_argument("--k-max", type=int, default=defaults.k_max)
    run.add_argument("--sub-k-min", type=int, default=defaults.sub_k_min)
    run.add_argument("--sub-k-max", type=int, default=defaults.sub_k_max)
    run.add_argument("--random-state", type=int, default=defaults.random_state)
    run.add_argument("--exclude-neighborhoods", metavar="JSON",
                     help="JSON list of names kept out of the residential clustering "
                          "(default: the notebook's 13)")  # fmt: skip
    run.add_argument(
        "--clustering-features",
        metavar="JSON",
        help="JSON list of feature columns (default: the notebook's 15)",
    )
    run.add_argument("--severity-feature", default=defaults.severity_feature)
    run.add_argument("--silhouette-sample-size", type=int,
                     default=defaults.silhouette_sample_size,
                     help="above this many rows, silhouettes use a fixed-seed sample "
                          "of this size")  # fmt: skip
    run.add_argument("--dry-run", action="store_true", help="compute everything, publish nothing")
    run.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    run.set_defaults(func=_run)

    sample = commands.add_parser("sample", help="write the synthetic demo table")
    sample.add_argument("--rows", type=int, default=279)
    sample.add_argument("--random-state", type=int, default=0)
    sample.add_argument("--out", metavar="PATH", required=True, help=".csv or .parquet file")
    sample.set_defaults(func=_sample)

    from clustering import sender

    sender.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except InputError as error:
        sys.stderr.write(f"error: {one_line(error)}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted; nothing was published\n")
        return 1
    except Exception as error:
        traceback.print_exc()
        sys.stderr.write(f"error: unexpected failure ({type(error).__name__}: {error})\n")
        return 1


def settings_from_args(args: argparse.Namespace) -> JobSettings:
    defaults = AnalysisSettings()
    analysis = AnalysisSettings(
        min_population=args.min_population,
        k_min=args.k_min,
        k_max=args.k_max,
        sub_k_min=args.sub_k_min,
        sub_k_max=args.sub_k_max,
        random_state=args.random_state,
        exclude_neighborhoods=_names(
            args.exclude_neighborhoods, "--exclude-neighborhoods", defaults.exclude_neighborhoods
        ),
        clustering_features=_names(
            args.clustering_features, "--clustering-features", defaults.clustering_features
        ),
        severity_feature=args.severity_feature,
        silhouette_sample_size=args.silhouette_sample_size,
    )
    return JobSettings(
        features_source=args.features,
        artifacts_dest=args.out,
        clusters_table=args.clusters_table,
        runs_table=args.runs_table,
        boundaries_source=args.boundaries,
        analysis=analysis,
        transitions_table=args.transitions_table,
        label_overrides=parse_label_overrides(args.label_overrides or "{}", "--label-overrides"),
    )


def _names(raw: str | None, flag: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """A JSON list flag; absent means the default, `[]` means an empty list."""
    return default if raw is None else parse_name_list(raw, flag)


def _run(args: argparse.Namespace) -> int:
    from clustering.job import RunRequest, run_job

    settings = settings_from_args(args)
    began = time.perf_counter()

    def progress(message: str) -> None:
        if not args.quiet:
            sys.stderr.write(f"[{time.perf_counter() - began:6.1f}s] {message}\n")
            sys.stderr.flush()

    report = run_job(settings, RunRequest(trigger="cli", dry_run=args.dry_run), progress)
    manifest = report.manifest
    # Warnings are not progress: --quiet keeps them.
    for warning in manifest["warnings"]:
        sys.stderr.write(f"warning: {one_line(warning)}\n")
    groups = ", ".join(f"{g['label']} {g['rows']} rows in {g['sub_k']} sub-clusters"
                       for g in manifest["top_groups"])  # fmt: skip
    where = "nothing published (dry run)" if args.dry_run else f"artifacts in {args.out}/latest/"
    moves = manifest["transitions"]
    if moves["previous_run_id"]:
        changed = moves["moved"] + moves["appeared"] + moves["disappeared"]
        where = (
            f"{changed} neighborhoods changed cohort since run {moves['previous_run_id']}; {where}"
        )
    print(f"run {report.run_id}: {manifest['input']['rows']} neighborhoods; {groups}; {where}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from clustering.adapters.local import replace_table
    from clustering.sample import make_sample

    if args.rows < 20:
        raise InputError(f"--rows is {args.rows}: the sample needs at least 20 rows")
    replace_table(args.out, make_sample(args.rows, args.random_state))
    print(f"wrote {args.rows} rows to {args.out}")
    return 0
