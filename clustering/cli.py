"""Command line: `python -m clustering run | assign | sample | settings-table | send-event`.

Exit codes: 0 success, 2 bad input or settings (one `error:` line, no traceback), 1 when a run
stopped itself (out of its `--time-budget`, or its run lock taken over: one `error:` line,
nothing more published) and for the unexpected (with a traceback). Progress goes to stderr, one
line per stage; the result summary to stdout.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
import time
import traceback
from argparse import SUPPRESS
from collections.abc import Mapping, Sequence

from clustering import InputError, one_line
from clustering.adapters import budget, claims
from clustering.job import NotSettled
from clustering.options import OPTIONS
from clustering.settings import AnalysisSettings, JobSettings, parse_value


class _Help(argparse.HelpFormatter):
    """Shows an option's default after its help, unless the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == SUPPRESS
        if "default" in text or action.required or unset:
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit code 2, pointing at the help
    of the subcommand at fault."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message} (see {self.prog} --help)\n")
        sys.exit(2)

    def parse_args(self, args=None, namespace=None):  # type: ignore[override]
        # argparse reports a subcommand's unknown options from the top-level parser, whose
        # help does not list them; report them from the subcommand, with a did-you-mean.
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            owner = self._command_parser(getattr(parsed, "command", None))
            owner.error(f"unrecognized arguments: {' '.join(extras)}{owner._suggest(extras)}")
        return parsed

    def _command_parser(self, command: str | None) -> _Parser:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and command in action.choices:
                return action.choices[command]
        return self

    def _suggest(self, extras: list[str]) -> str:
        known = [flag for action in self._actions for flag in action.option_strings]
        for extra in extras:
            if extra.startswith("--"):
                close = difflib.get_close_matches(extra.split("=")[0], known, n=1, cutoff=0.6)
                if close:
                    return f"; did you mean {close[0]}?"
        return ""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m clustering", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in (_add_run, _add_assign, _add_sample, _add_settings_table):
        add(commands)
    from clustering.cloud import sender

    sender.register(commands)
    return parser


def _add_run(commands) -> None:
    run = commands.add_parser(
        "run",
        help="cluster a features table and write the artifacts",
        description="Cluster a features table and publish the artifacts. Each setting's help "
        "names the function's environment variable for it, which this command reads too; a "
        "flag given wins over its variable (docs/configuration.md).",
    )
    for option in OPTIONS:
        if option.flag:
            run.add_argument(
                option.flag,
                dest=option.field,
                metavar=option.metavar or "N",
                type=option.type,
                help=option.cli_help(),
            )
    run.add_argument("--dry-run", action="store_true", help="compute everything, publish nothing")
    run.add_argument(
        "--force",
        action="store_true",
        help="publish even if the table has fewer rows than MIN_ROWS_RATIO of the "
        "last published run (the row-drop guard)",
    )
    run.add_argument(
        "--quiet", action="store_true", help="no progress lines on stderr (warnings still show)"
    )
    run.set_defaults(func=_run)


def _add_assign(commands) -> None:
    assign = commands.add_parser(
        "assign",
        help="apply a run's model to a table, without refitting",
        description="Give every row of a table the cohort a run's model document assigns it "
        "(docs/analysis.md, The model document): a what-if edit, a new neighborhood, a "
        "planning scenario. Nothing is refitted and no run is published.",
    )
    assign.add_argument(
        "--run",
        metavar="RUN",
        required=True,
        help="the run: a run folder, its run.json, or a latest/ folder (local or gs://)",
    )
    assign.add_argument(
        "--features",
        metavar="SRC",
        required=True,
        help="the table to assign (.csv, .parquet, gs:// or bq://), with the run's features",
    )
    assign.add_argument(
        "--out",
        metavar="DEST",
        required=True,
        help="where the assigned rows go: a .csv or .parquet path, or a bq:// table",
    )
    assign.set_defaults(func=_assign)


def _add_sample(commands) -> None:
    sample = commands.add_parser("sample", help="write the synthetic demo table")
    sample.add_argument("--rows", type=int, default=279, help="number of neighborhoods")
    sample.add_argument("--random-state", type=int, default=0, help="seed of the generator")
    sample.add_argument(
        "--out", metavar="PATH", required=True, help=".csv or .parquet file to write (required)"
    )
    sample.set_defaults(func=_sample)


def _add_settings_table(commands) -> None:
    table = commands.add_parser(
        "settings-table",
        help="print the settings table (Markdown) that docs/configuration.md shows",
    )
    table.add_argument(
        "--page",
        metavar="PATH",
        help="rewrite the table inside this Markdown page (docs/configuration.md) instead",
    )
    table.set_defaults(func=_settings_table)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (InputError, NotSettled) as error:
        sys.stderr.write(f"error: {one_line(error)}\n")
        return 2
    except (budget.OutOfTime, claims.ClaimLost) as error:
        # The run stopped itself before publishing anything more: one line, no traceback.
        sys.stderr.write(f"error: {one_line(error)}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted; nothing was published\n")
        return 1
    except Exception as error:
        traceback.print_exc()
        sys.stderr.write(f"error: unexpected failure ({type(error).__name__}: {error})\n")
        return 1


def settings_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> JobSettings:
    """The settings of `run`, as the function reads them: each flag given, else its
    environment variable (the function's, set and not blank), else its registry default.
    `environ` defaults to the process environment."""
    environ = os.environ if environ is None else environ
    values: dict[str, dict[str, object]] = {"job": {}, "analysis": {}}
    for option in OPTIONS:
        raw = getattr(args, option.field) if option.flag else None
        variable = environ.get(option.env, "").strip() if option.env else ""
        if raw is not None:
            # argparse has converted numbers already; JSON and text values are parsed here.
            value = parse_value(option, raw, option.flag) if isinstance(raw, str) else raw
        elif variable:
            value = parse_value(option, variable, option.env)
        else:
            value = option.default
        values["analysis" if option.analysis else "job"][option.field] = value
    return JobSettings(**values["job"], analysis=AnalysisSettings(**values["analysis"]))


def _run(args: argparse.Namespace) -> int:
    from clustering.job import RunRequest

    settings = settings_from_args(args)
    began = time.perf_counter()

    def progress(message: str) -> None:
        if not args.quiet:
            sys.stderr.write(f"[{time.perf_counter() - began:6.1f}s] {message}\n")
            sys.stderr.flush()

    def warn(warning: str) -> None:  # not progress: --quiet keeps warnings
        sys.stderr.write(f"warning: {one_line(warning)}\n")
        sys.stderr.flush()

    request = RunRequest(trigger="cli", dry_run=args.dry_run, force=args.force)
    # The run's own deadline: every client call and job wait fits in what is left of it.
    with budget.bounded(budget.Budget.lasting(settings.run_budget_seconds)):
        report = _locked_run(settings, request, progress, warn)
    manifest = report.manifest
    groups = ", ".join(
        f"{g['label']} {g['rows']} rows in {g['sub_k']} sub-clusters"
        for g in manifest["top_groups"]
    )
    where = (
        "nothing published (dry run)"
        if args.dry_run
        else f"artifacts in {settings.artifacts_dest}/latest/"
    )
    moves = manifest["transitions"]
    rows_called = settings.analysis.rows_called
    if moves["previous_run_id"] and moves["moved"] is not None:
        changed = moves["moved"] + moves["appeared"] + moves["disappeared"]
        where = (
            f"{changed} {rows_called} changed cohort since run {moves['previous_run_id']}; {where}"
        )
    elif moves["previous_run_id"]:
        where = f"no transitions (run {moves['previous_run_id']} left no clusters CSV); {where}"
    print(f"run {report.run_id}: {manifest['input']['rows']} {rows_called}; {groups}; {where}")
    return 0


def _assign(args: argparse.Namespace) -> int:
    from clustering.stages.apply import assign_table

    done = assign_table(args.run, args.features, args.out)
    print(
        f"assigned {done.rows} rows by the model of run {done.run_id}: {done.residential} "
        f"residential, {done.rows - done.residential} excluded; wrote {done.dest}"
    )
    return 0


def _shared(settings: JobSettings) -> bool:
    """Whether a run publishes where a deployed function may publish too (gs://, bq://)."""
    destinations = (
        settings.artifacts_dest,
        settings.clusters_table,
        settings.runs_table,
        settings.transitions_table,
    )
    return any(d and d.startswith(("gs://", "bq://")) for d in destinations)


def _locked_run(settings: JobSettings, request, progress, warn):
    """run_job, holding the function's run lock (claims/ in the artifact store) when the run
    publishes to gs:// or bq://, so that a manual run never races a deployed one; every
    publishing step is fenced by it, as in the function."""
    from datetime import UTC, datetime

    from clustering.adapters import artifact_store, claims
    from clustering.job import run_job
    from clustering.naming import new_run_id

    if request.dry_run or not _shared(settings):
        return run_job(settings, request, progress, on_warning=warn)
    store = artifact_store(settings.artifacts_dest)
    started = datetime.now(UTC)
    mine = claims.Claim(run_id=new_run_id(started), event_id=None, claimed_at=started.isoformat())
    _, holder, fence = claims.claim(store, f"cli-{mine.run_id}", mine, started)
    if fence is None:
        who = f"run {holder.run_id} since {holder.claimed_at}" if holder else "another run"
        raise InputError(
            f"{who} holds the run lock in {store.describe('claims/')}: nothing was published; "
            "run again when it has finished"
        )
    if holder is not None:
        warn(f"took over the run lock of run {holder.run_id}, which never finished")
    # A CLI run may last hours: the heartbeat keeps the lock from looking stale meanwhile.
    with claims.Heartbeat(fence, claims.HEARTBEAT_SECONDS) as beat:
        return run_job(
            settings, request, progress, on_warning=warn, run_id=mine.run_id, fence=beat.check
        )


def _sample(args: argparse.Namespace) -> int:
    from clustering.adapters.local import replace_table
    from clustering.analysis.sample import make_sample

    if args.rows < 20:
        raise InputError(f"--rows is {args.rows}: the sample needs at least 20 rows")
    replace_table(args.out, make_sample(args.rows, args.random_state))
    print(f"wrote {args.rows} rows to {args.out}")
    return 0


def _settings_table(args: argparse.Namespace) -> int:
    from pathlib import Path

    from clustering.options import settings_table, with_settings_table

    if args.page is None:
        print(settings_table())
        return 0
    page = Path(args.page)
    if not page.is_file():
        raise InputError(f"{page}: no such file: give the path of docs/configuration.md")
    try:
        page.write_text(with_settings_table(page.read_text("utf-8")), "utf-8")
    except ValueError as error:
        raise InputError(f"{page}: {error}") from None
    print(f"rewrote the settings table in {page}")
    return 0
