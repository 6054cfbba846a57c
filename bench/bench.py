"""`make bench`: time the CLI against the notebook baseline and the bare import floor.

Every measurement is a cold, whole process (interpreter start to the last output written),
spawned as a child: wall seconds from time.perf_counter around it, peak memory from the
child's own rusage (os.wait4). The cases:

  real  the 279-row Baltimore table: ours vs baseline vs floor, --rounds rounds (default 5)
  20k   20,000 synthetic rows: ours vs baseline, --large-rounds rounds (default 1)
  200k  200,000 synthetic rows: ours vs the bare method (bench/bare_method.py: the method's
        unavoidable work, written plainly, with the full K search), --large-rounds rounds
  250k  250,000 synthetic rows: ours only, --large-rounds rounds (default 1)
  wh1m, wh3m, engines  the warehouse engine on the local emulators (bench/warehouse_case.py):
        1M and 3M rows under ENGINE=auto, and one 250k table by both engines
  coldstart  a fresh function instance: `import main` and the first delivery it skips
        (bench/cold_start.py), --rounds rounds

Contenders alternate within each round (A, B, C, A, B, C, ...) so that noise from the shared
machine falls on all of them alike; the report shows the median per contender. It is a report,
not a test: it exits 0 whether or not the targets are met.

`clustering/` is copied once at start and every run of ours uses that copy: others edit the
working tree while a long benchmark runs, and a half-saved edit must not land in one round only.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cold_start

ROOT = Path(__file__).resolve().parent.parent
REAL_TABLE = ROOT / "data" / "baltimore" / "baltimore_neighborhood_features.csv"
BASELINE = ROOT / "bench" / "baseline_notebook.py"
BARE = ROOT / "bench" / "bare_method.py"
# The venv interpreter by its venv path: resolving the symlink would lose the venv's packages.
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable

BASELINE_FILES = (
    "neighborhood_clusters.csv",
    "excluded_neighborhood_analysis.csv",
    "elbow_silhouette.png",
    "pca_clusters.png",
    "cluster_heatmap.png",
)
# The notebook writes no report and no manifest.
OURS_FILES = (*BASELINE_FILES, "report.html", "run.json")
CASES = ("real", "20k", "200k", "250k", "wh1m", "wh3m", "engines", "coldstart")
WAREHOUSE_CASES = ("wh1m", "wh3m", "engines")
# The warehouse engine's targets (issue 17): our process's peak, and how it grows 1M -> 3M.
WAREHOUSE_PEAK_MIB = 1536
WAREHOUSE_GROWTH = 1.25
SYNTHETIC_ROWS = {"20k": 20_000, "200k": 200_000, "250k": 250_000}
STDERR_TAIL_LINES = 40
# ru_maxrss is the largest single process; a run that forks helpers can use more than that in
# total, so the process tree's summed PSS is also sampled at this interval.
TREE_SAMPLE_SECONDS = 0.2


@dataclass(frozen=True)
class Contender:
    """One command under test; `argv` and `outputs` take the run's fresh output folder."""

    name: str
    argv: Callable[[Path], list[str]]
    outputs: Callable[[Path], list[Path]]
    cwd: Path = ROOT
    # The file holding its partition (key, top_cluster, sub_cluster), kept for comparison.
    partition: Callable[[Path], Path] | None = None


@dataclass
class Sample:
    """One timed process."""

    round: int
    wall_s: float
    peak_mib: float
    tree_pss_mib: float
    processes: int
    exit_code: int
    ok: bool
    error: str | None = None
    timings_seconds: dict[str, float] | None = None
    rows_reported: int | None = None


@dataclass
class ContenderResult:
    name: str
    samples: list[Sample] = field(default_factory=list)

    @property
    def good(self) -> list[Sample]:
        return [s for s in self.samples if s.ok]

    def median(self, attribute: str) -> float | None:
        values = [getattr(s, attribute) for s in self.good]
        return statistics.median(values) if values else None

    def spread(self, attribute: str) -> tuple[float, float] | None:
        values = [getattr(s, attribute) for s in self.good]
        return (min(values), max(values)) if values else None

    def first_error(self) -> str | None:
        return next((s.error for s in self.samples if not s.ok), None)


@dataclass
class CaseResult:
    case: str
    rows: int | None
    rounds: int
    contenders: list[ContenderResult] = field(default_factory=list)
    skipped: str | None = None
    load_before: tuple[float, float, float] | None = None
    load_after: tuple[float, float, float] | None = None
    metrics: dict = field(default_factory=dict)

    def get(self, name: str) -> ContenderResult | None:
        return next((c for c in self.contenders if c.name == name), None)


# ---------------------------------------------------------------------------------------------
# Measuring one process


@dataclass
class Measurement:
    wall_s: float
    peak_mib: float
    tree_pss_mib: float
    processes: int
    exit_code: int
    timed_out: bool


def measure(argv: list[str], cwd: Path, stderr_path: Path, timeout: float) -> Measurement:
    """Run argv to completion and measure it.

    The child is reaped with os.wait4 rather than Popen.wait so that its own rusage comes back
    with it: ru_maxrss is the child's peak (KiB on Linux), not the benchmark's; for a child
    that waited for helpers of its own, it is the largest of them, not their sum.
    """
    with open(stderr_path, "wb") as stderr:
        began = time.perf_counter()
        child = subprocess.Popen(
            argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
        )
        sampler = TreeSampler(child.pid)
        sampler.start()
        timed_out = _kill_after(child.pid, timeout)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - began
        sampler.stop()
    # Tell Popen the child is gone, or it would try to reap it again.
    child.returncode = os.waitstatus_to_exitcode(status)
    return Measurement(
        wall_s=wall,
        peak_mib=usage.ru_maxrss / 1024,
        tree_pss_mib=sampler.peak_kib / 1024,
        processes=sampler.max_processes,
        exit_code=child.returncode,
        timed_out=timed_out,
    )


def _kill_after(pid: int, timeout: float) -> bool:
    """Block until the child exits or `timeout` passes, then SIGKILL it; True if killed.

    A pidfd cannot point at a recycled pid, unlike a timer calling os.kill; without pidfd
    support there is no timeout at all rather than a racy one.
    """
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        ready, _, _ = select.select([pidfd], [], [], timeout)
        if not ready:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            return True
        return False
    finally:
        os.close(pidfd)


class TreeSampler(threading.Thread):
    """Peak of the summed PSS of a process and its descendants, polled from /proc.

    PSS rather than RSS so that pages a forked helper still shares with its parent count once.
    Polling can miss a short spike, so this is a lower bound on the tree's true peak.
    """

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_kib = 0
        self.max_processes = 0
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(TREE_SAMPLE_SECONDS):
            pids = _descendants(self.pid)
            total = sum(_pss_kib(pid) for pid in pids)
            self.peak_kib = max(self.peak_kib, total)
            self.max_processes = max(self.max_processes, len(pids))

    def stop(self) -> None:
        self._stopped.set()
        self.join()


def _descendants(root: int) -> list[int]:
    found, queue = [], [root]
    while queue:
        pid = queue.pop()
        found.append(pid)
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as handle:
                    queue.extend(int(child) for child in handle.read().split())
        except OSError:
            continue
    return found


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def run_one(contender: Contender, round_: int, scratch: Path, timeout: float) -> Sample:
    out = scratch / f"{contender.name}-{round_}"
    stderr_path = scratch / f"{contender.name}-{round_}.stderr"
    m = measure(contender.argv(out), contender.cwd, stderr_path, timeout)
    sample = sampled(m, round_, stderr_path, timeout)
    if sample.ok:
        missing = [p.name for p in contender.outputs(out) if not p.is_file()]
        if missing:
            sample.ok = False
            sample.error = f"exit 0 but missing outputs: {', '.join(missing)}"
    manifest = out / "latest" / "run.json"
    if sample.ok and manifest.is_file():
        with_manifest(sample, json.loads(manifest.read_text()))
    if sample.ok and contender.partition:
        shutil.copy(contender.partition(out), scratch / f"{contender.name}-partition.csv")
    # Outputs of a 250k run are large; keep only one run's worth on disk at a time.
    shutil.rmtree(out, ignore_errors=True)
    stderr_path.unlink(missing_ok=True)
    return sample


def with_manifest(sample: Sample, document: dict) -> None:
    """The run's own stage timings and row count, from its run.json."""
    sample.timings_seconds = document.get("timings_seconds")
    sample.rows_reported = document.get("input", {}).get("rows")


def sampled(m: Measurement, round_: int, stderr_path: Path, timeout: float) -> Sample:
    """A measured process as a Sample; a failure carries why and the tail of its stderr."""
    sample = Sample(
        round=round_,
        wall_s=round(m.wall_s, 3),
        peak_mib=round(m.peak_mib, 1),
        tree_pss_mib=round(m.tree_pss_mib, 1),
        processes=m.processes,
        exit_code=m.exit_code,
        ok=m.exit_code == 0,
    )
    if m.exit_code != 0:
        if m.timed_out:
            why = f"killed after --timeout {timeout:g} s"
        elif m.exit_code < 0:
            why = f"killed by signal {signal.Signals(-m.exit_code).name} (out of memory?)"
        else:
            why = f"exit code {m.exit_code}"
        sample.error = f"{why}; stderr:\n{_tail(stderr_path)}"
    return sample


def _tail(path: Path) -> str:
    lines = path.read_text(errors="replace").splitlines()
    return "\n".join(lines[-STDERR_TAIL_LINES:]) or "(empty)"


# ---------------------------------------------------------------------------------------------
# The code under test


@dataclass(frozen=True)
class CodeSnapshot:
    where: Path
    head: str
    dirty: tuple[str, ...]
    digest: str

    def describe(self) -> str:
        changes = f" + uncommitted: {', '.join(self.dirty)}" if self.dirty else ""
        return f"clustering/ as of bench start: HEAD {self.head}{changes} (sha256 {self.digest})"


def snapshot_code(scratch: Path) -> CodeSnapshot:
    """Copy clustering/ and compile it, so every round runs the same, already compiled code."""
    where = scratch / "code"
    shutil.copytree(
        ROOT / "clustering", where / "clustering", ignore=shutil.ignore_patterns("__pycache__")
    )
    subprocess.run([PYTHON, "-m", "compileall", "-q", str(where / "clustering")], check=True)
    digest = hashlib.sha256()
    for path in sorted((where / "clustering").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(where)).encode())
            digest.update(path.read_bytes())
    return CodeSnapshot(where, *_git_state(), digest.hexdigest()[:12])


def _git_state() -> tuple[str, tuple[str, ...]]:
    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        # rstrip only: porcelain status lines start with a meaningful space.
        return done.stdout.rstrip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    status = git("status", "--porcelain", "--", "clustering")
    return head, tuple(line[3:] for line in status.splitlines())


# ---------------------------------------------------------------------------------------------
# Contenders and cases


def ours(code: Path) -> Contender:
    argv = ["-m", "clustering", "run", "--features", "{features}", "--out", "{out}", "--quiet"]
    return Contender(
        "ours",
        # `-m` puts the working folder first on sys.path, so the snapshot is what runs.
        lambda out: [PYTHON, *(str(out) if a == "{out}" else a for a in argv)],
        lambda out: [out / "latest" / name for name in OURS_FILES],
        cwd=code,
        partition=lambda out: out / "latest" / "neighborhood_clusters.csv",
    )


def bare() -> Contender:
    return Contender(
        "bare",
        lambda out: [PYTHON, str(BARE), "{features}", str(out)],
        lambda out: [out / "partition.csv"],
        partition=lambda out: out / "partition.csv",
    )


def baseline() -> Contender:
    return Contender(
        "baseline",
        lambda out: [PYTHON, str(BASELINE), "{features}", str(out)],
        lambda out: [out / name for name in BASELINE_FILES],
    )


def floor() -> Contender:
    return Contender(
        "floor",
        lambda out: [PYTHON, "-c", "import pandas, sklearn.cluster, matplotlib.pyplot"],
        lambda out: [],
    )


def with_features(contender: Contender, features: Path) -> Contender:
    def argv(out: Path) -> list[str]:
        return [str(features) if a == "{features}" else a for a in contender.argv(out)]

    return Contender(contender.name, argv, contender.outputs, contender.cwd, contender.partition)


def run_case(
    case: str,
    features: Path,
    rows: int,
    contenders: list[Contender],
    rounds: int,
    scratch: Path,
    timeout: float,
    warmup: bool,
) -> CaseResult:
    contenders = [with_features(c, features) for c in contenders]
    result = CaseResult(case, rows, rounds, [ContenderResult(c.name) for c in contenders])
    if warmup:
        # One untimed run each, so the first timed contender does not alone pay for reading
        # the libraries from disk into the page cache.
        for contender in contenders:
            _progress(f"{case}: warm-up {contender.name}")
            run_one(contender, 0, scratch, timeout)
    result.load_before = os.getloadavg()
    failed: set[str] = set()
    for round_ in range(1, rounds + 1):
        for contender, record in zip(contenders, result.contenders, strict=True):
            if contender.name in failed:
                continue
            sample = run_one(contender, round_, scratch, timeout)
            record.samples.append(sample)
            _progress(
                f"{case}: round {round_}/{rounds} {contender.name}: {sample.wall_s:.2f} s, "
                f"peak {sample.peak_mib:.0f} MiB, tree PSS {sample.tree_pss_mib:.0f} MiB "
                f"({sample.processes} proc), {'ok' if sample.ok else 'FAILED'}"
            )
            if not sample.ok:
                # A failure is reported verbatim once; repeating it would only cost time.
                failed.add(contender.name)
                _progress(f"{case}: {contender.name} failed: {sample.error}")
    result.load_after = os.getloadavg()
    return result


def make_synthetic(
    rows: int, code: Path, scratch: Path, timeout: float
) -> tuple[Path | None, str | None]:
    """Write the synthetic table with the project's own generator (untimed)."""
    path = scratch / f"s{rows // 1000}k.csv"
    argv = [PYTHON, "-m", "clustering", "sample", "--rows", str(rows), "--out", str(path)]
    done = subprocess.run(argv, cwd=code, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        return None, f"`{' '.join(argv)}` exited {done.returncode}: {done.stderr.strip()}"
    return path, None


def run_warehouse_case(case: str, em, code: Path, scratch: Path, timeout: float) -> CaseResult:
    """ENGINE=auto on 1M or 3M rows in BigQuery: an untimed first run publishes a state to
    compare with, then the timed run; every row must end up in the clusters table."""
    import warehouse_case as wh

    rows = wh.WAREHOUSE_ROWS[case]
    _progress(f"{case}: loading {rows:,} synthetic rows into the BigQuery emulator (untimed)")
    wh.load(f"features_{case}", rows, seed=1)
    argv = wh.run_argv(
        PYTHON,
        f"features_{case}",
        f"clusters_{case}",
        f"gs://{em.bucket}/{case}",
        *("--transitions-table", f"bq://{wh.DATASET}.transitions_{case}"),
    )
    result = CaseResult(case, rows, 1, [ContenderResult("ours")])
    result.load_before = os.getloadavg()
    for round_ in (0, 1):  # 0: the untimed first run
        stderr_path = scratch / f"{case}-{round_}.stderr"
        sample = sampled(measure(argv, code, stderr_path, timeout), round_, stderr_path, timeout)
        _progress(f"{case}: {'warm-up' if round_ == 0 else 'timed'} run: {sample.wall_s:.1f} s")
        if not sample.ok or round_ == 0:
            if not sample.ok:
                result.contenders[0].samples.append(sample)
                break
            continue
        manifest = wh.manifest_at(em, case) or {}
        with_manifest(sample, manifest)
        total, mine = wh.scored_rows(em, f"clusters_{case}", manifest.get("run_id", "?"))
        result.metrics = {"scored_rows": mine, "table_rows": total}
        if (total, mine) != (rows, rows):
            sample.ok, sample.error = False, f"{mine:,} of {rows:,} rows scored by the run"
        result.contenders[0].samples.append(sample)
    result.load_after = os.getloadavg()
    return result


def run_engines_case(em, code: Path, scratch: Path, timeout: float) -> CaseResult:
    """One 250k table by --engine memory and by --engine warehouse --sample-rows 100000;
    the partitions compared in the memory run's scaled space."""
    import warehouse_case as wh

    rows = wh.ENGINES_ROWS
    _progress(f"engines: loading {rows:,} synthetic rows into the BigQuery emulator (untimed)")
    wh.load("features_engines", rows, seed=2)
    memory_dir = scratch / "engines-memory"
    runs = {
        "memory": wh.run_argv(
            PYTHON, "features_engines", "clusters_memory", str(memory_dir), "--engine", "memory"
        ),
        "warehouse": wh.run_argv(
            PYTHON,
            "features_engines",
            "clusters_warehouse",
            f"gs://{em.bucket}/engines",
            *("--engine", "warehouse", "--sample-rows", str(wh.ENGINES_SAMPLE)),
        ),
    }
    result = CaseResult("engines", rows, 1, [ContenderResult(name) for name in runs])
    result.load_before = os.getloadavg()
    manifests = {}
    for record, (name, argv) in zip(result.contenders, runs.items(), strict=True):
        stderr_path = scratch / f"engines-{name}.stderr"
        sample = sampled(measure(argv, code, stderr_path, timeout), 1, stderr_path, timeout)
        _progress(f"engines: {name}: {sample.wall_s:.1f} s, {'ok' if sample.ok else 'FAILED'}")
        if sample.ok:
            local = memory_dir / "latest" / "run.json"
            found = json.loads(local.read_text()) if name == "memory" else None
            manifests[name] = found or wh.manifest_at(em, "engines") or {}
            with_manifest(sample, manifests[name])
        record.samples.append(sample)
    result.load_after = os.getloadavg()
    if len(manifests) == 2:
        result.metrics = wh.compare_engines(memory_dir, manifests["warehouse"], em, seed=2)
    shutil.rmtree(memory_dir, ignore_errors=True)
    return result


def agreement(ours_csv: Path, bare_csv: Path) -> dict:
    """How ours' partition agrees with the bare method's full K search, over the residential
    rows: ARI of the top splits and of the sub-clusters, and whether each group got its K."""
    import pandas as pd
    from sklearn.metrics import adjusted_rand_score

    if not (ours_csv.is_file() and bare_csv.is_file()):
        return {}
    columns = ["neighborhood", "top_cluster", "sub_cluster"]
    mine = pd.read_csv(ours_csv, usecols=columns)
    both = mine[mine["top_cluster"] >= 0].merge(
        pd.read_csv(bare_csv), on="neighborhood", suffixes=("", "_bare")
    )

    def ks(top: str, sub: str) -> list[int]:
        return sorted(both.groupby(top)[sub].nunique().tolist())

    ours_csv.unlink()
    bare_csv.unlink()
    return {
        "rows_compared": len(both),
        "ari_top_split": round(
            adjusted_rand_score(both["top_cluster_bare"], both["top_cluster"]), 4
        ),
        "ari_sub_clusters": round(
            adjusted_rand_score(both["sub_cluster_bare"], both["sub_cluster"]), 4
        ),
        "sub_ks_equal": int(
            ks("top_cluster", "sub_cluster") == ks("top_cluster_bare", "sub_cluster_bare")
        ),
    }


def count_rows(path: Path) -> int:
    with open(path, newline="") as handle:
        return sum(1 for _ in csv.reader(handle)) - 1


# ---------------------------------------------------------------------------------------------
# Report


@dataclass
class Target:
    case: str
    what: str
    value: float | None
    limit: float
    unit: str
    at_least: bool = False  # the value must reach the limit, not stay under it

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "FAIL (no value)"
        met = self.value >= self.limit if self.at_least else self.value <= self.limit
        return "PASS" if met else "FAIL"


def targets_for(result: CaseResult) -> list[Target]:
    def median(name: str, attribute: str) -> float | None:
        record = result.get(name)
        return record.median(attribute) if record else None

    def ratio(a: str, b: str) -> float | None:
        x, y = median(a, "wall_s"), median(b, "wall_s")
        return round(x / y, 3) if x is not None and y else None

    if result.case == "real":
        return [
            Target("real", "wall ours/baseline", ratio("ours", "baseline"), 0.80, "x"),
            Target("real", "wall ours/floor", ratio("ours", "floor"), 1.40, "x"),
        ]
    if result.case == "20k":
        return [Target("20k", "wall ours/baseline", ratio("ours", "baseline"), 0.20, "x")]
    if result.case == "200k":
        metrics = result.metrics
        return [
            Target("200k", "wall ours/bare", ratio("ours", "bare"), 0.60, "x"),
            Target("200k", "ARI sub vs bare", metrics.get("ari_sub_clusters"), 0.99, "", True),
            Target("200k", "sub-Ks equal", metrics.get("sub_ks_equal"), 1, "", True),
        ]
    if result.case in ("wh1m", "wh3m"):
        found = [
            Target(result.case, "peak ours", median("ours", "peak_mib"), WAREHOUSE_PEAK_MIB, "MiB")
        ]
        if "peak_over_wh1m" in result.metrics:
            growth = result.metrics["peak_over_wh1m"]
            found.append(Target("wh3m", "peak 3M/1M", growth, WAREHOUSE_GROWTH, "x"))
        return found
    if result.case == "engines":
        metrics = result.metrics
        return [
            Target("engines", "ARI top split", metrics.get("ari_top_split"), 0.95, "", True),
            Target("engines", "within-SS wh/mem", metrics.get("within_ss_ratio"), 1.02, "x"),
        ]
    return [
        Target("250k", "wall ours", median("ours", "wall_s"), 540, "s"),
        Target("250k", "peak ours", median("ours", "peak_mib"), 2048, "MiB"),
    ]


def machine_info() -> dict:
    memory_kib = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kib = int(line.split()[1])
    except OSError:
        pass
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gib": round(memory_kib / 1024**2, 1) if memory_kib else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "interpreter": PYTHON,
        "thread_env": {k: os.environ[k] for k in names if k in os.environ},
    }


def format_report(machine: dict, code: CodeSnapshot, cases: list[CaseResult], load: dict) -> str:
    lines = [
        f"machine: {machine['cpu_count']} CPUs ({machine['usable_cpus']} usable), "
        f"{machine['memory_gib']} GiB RAM, {machine['platform']}, Python {machine['python']}",
        f"code: {code.describe()}",
        f"load average (1/5/15 min): before {_load(load['before'])}, after {_load(load['after'])}",
    ]
    if machine["thread_env"]:
        lines.append(f"thread settings: {machine['thread_env']}")
    header = (
        f"{'case':<5} {'contender':<9} {'rows':>7} {'runs':>4} {'wall s':>8} {'(min-max)':>15} "
        f"{'peak MiB':>8} {'(min-max)':>11} {'tree MiB':>8} {'proc':>4}  load 1m before/after"
    )
    lines += ["", header, "-" * len(header)]
    for case in cases:
        if case.skipped:
            lines.append(f"{case.case:<5} skipped: {case.skipped}")
            continue
        loads = f"{case.load_before[0]:.2f} / {case.load_after[0]:.2f}"
        for record in case.contenders:
            start = f"{case.case:<5} {record.name:<9} {case.rows:>7}"
            wall = record.median("wall_s")
            if wall is None:
                lines.append(f"{start} {len(record.samples):>4} FAILED (see below)")
                continue
            w_lo, w_hi = record.spread("wall_s")
            p_lo, p_hi = record.spread("peak_mib")
            processes = max(s.processes for s in record.good)
            lines.append(
                f"{start} {len(record.good):>4} {wall:>8.2f} {f'({w_lo:.2f}-{w_hi:.2f})':>15} "
                f"{record.median('peak_mib'):>8.0f} {f'({p_lo:.0f}-{p_hi:.0f})':>11} "
                f"{record.median('tree_pss_mib'):>8.0f} {processes:>4}  {loads}"
            )
    lines += [
        "",
        "wall s and peak MiB: medians. peak MiB = the child's ru_maxrss from os.wait4 (largest "
        "single process);",
        f"tree MiB = peak summed PSS of the process tree, polled every {TREE_SAMPLE_SECONDS} s "
        "(lower bound); proc = most processes seen at once.",
        "",
        "targets (on medians):",
    ]
    for case in cases:
        if case.skipped:
            continue
        for target in targets_for(case):
            shown = "n/a" if target.value is None else f"{target.value:g} {target.unit}"
            sign = ">=" if target.at_least else "<="
            lines.append(
                f"  {target.case:<7} {target.what:<20} {shown:>12}   "
                f"target {sign} {target.limit:g} {target.unit:<4} {target.verdict}"
            )
        if case.metrics:
            lines.append(f"  {case.case:<7} (info) {json.dumps(case.metrics)}")
        memory = _memory_ratios(case)
        if memory:
            lines.append(f"  {case.case:<5} (info) peak MiB {memory}")
    lines.extend(_timings_section(cases))
    failures = [(c.case, r.name, r.first_error()) for c in cases for r in c.contenders]
    failures = [f for f in failures if f[2]]
    if failures:
        lines += ["", "failures (verbatim):"]
        for case_name, name, error in failures:
            lines.append(f"  [{case_name} / {name}] {error}")
    return "\n".join(lines)


def _memory_ratios(case: CaseResult) -> str:
    ours_result = case.get("ours")
    mine = ours_result.median("peak_mib") if ours_result else None
    parts = []
    for other in ("baseline", "floor"):
        record = case.get(other)
        theirs = record.median("peak_mib") if record else None
        if mine and theirs:
            parts.append(f"ours/{other} {mine / theirs:.2f}x")
    return ", ".join(parts)


def _timings_section(cases: list[CaseResult]) -> list[str]:
    """Where our wall time goes, from run.json's per-stage timings (median per stage)."""
    lines = []
    ours_names = ("ours", "memory", "warehouse")
    for case, record in [(c, r) for c in cases for r in c.contenders if r.name in ours_names]:
        samples = [s for s in record.good if s.timings_seconds]
        if not samples:
            continue
        if not lines:
            lines += ["", "ours, seconds per stage (run.json timings_seconds, median):"]
        stages = list(samples[0].timings_seconds)
        medians = {
            stage: statistics.median(s.timings_seconds.get(stage, 0.0) for s in samples)
            for stage in stages
        }
        # run.json's stages begin after the imports and end before the publish step.
        rest = record.median("wall_s") - sum(medians.values())
        shown = "  ".join(f"{stage} {value:.2f}" for stage, value in medians.items())
        label = case.case if record.name == "ours" else f"{case.case}/{record.name}"
        lines.append(f"  {label:<5} {shown}  | rest (start-up, imports, publish) {rest:.2f}")
    return lines


def _load(values: tuple[float, float, float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


def _progress(message: str) -> None:
    stamp = datetime.now().strftime("%H:%M:%S")
    sys.stderr.write(f"[{stamp}] {message}\n")
    sys.stderr.flush()


# ---------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds of the real-table case (default 5)"
    )
    parser.add_argument(
        "--large-rounds",
        type=int,
        default=1,
        help="rounds of the 20k, 200k and 250k cases (default 1)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=CASES,
        help="run only this case; repeatable (default: all)",
    )
    parser.add_argument(
        "--json",
        metavar="PATH",
        type=Path,
        help="also save results as JSON (e.g. under bench/results/)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=3600,
        help="kill any one process after this long (default 3600 s)",
    )
    parser.add_argument(
        "--no-warmup", action="store_true", help="no untimed warm-up run per real-table contender"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.large_rounds < 1:
        parser.error("--rounds and --large-rounds must be at least 1")
    return args


def file_case(case: str, code: CodeSnapshot, scratch: Path, args) -> CaseResult:
    """The real table, or a synthetic one written to a CSV file (untimed)."""
    if case == "real":
        if not REAL_TABLE.is_file():
            _progress(f"real: skipped, {REAL_TABLE} is absent")
            return CaseResult(case, None, 0, skipped=f"{REAL_TABLE} is absent")
        contenders = [ours(code.where), baseline(), floor()]
        return run_case(
            case,
            REAL_TABLE,
            count_rows(REAL_TABLE),
            contenders,
            args.rounds,
            scratch,
            args.timeout,
            warmup=not args.no_warmup,
        )
    rows = SYNTHETIC_ROWS[case]
    _progress(f"{case}: generating {rows} synthetic rows (untimed)")
    path, error = make_synthetic(rows, code.where, scratch, args.timeout)
    if path is None:
        _progress(f"{case}: skipped, {error}")
        return CaseResult(case, rows, 0, skipped=error)
    others = {"20k": [baseline()], "200k": [bare()]}.get(case, [])
    result = run_case(
        case,
        path,
        rows,
        [ours(code.where), *others],
        args.large_rounds,
        scratch,
        args.timeout,
        warmup=False,
    )
    if case == "200k":
        result.metrics |= agreement(scratch / "ours-partition.csv", scratch / "bare-partition.csv")
    path.unlink(missing_ok=True)
    return result


def warehouse_cases(
    wanted: list[str], code: CodeSnapshot, scratch: Path, timeout: float
) -> list[CaseResult]:
    """The warehouse cases, on one pair of emulators; skipped where they are not built."""
    import warehouse_case as wh

    problem = wh.missing_tools()
    if problem:
        _progress(f"warehouse cases skipped: {problem}")
        return [CaseResult(case, None, 0, skipped=problem) for case in wanted]
    results = {}
    with wh.emulated(scratch / "emulators") as em:
        for case in wanted:
            if case == "engines":
                results[case] = run_engines_case(em, code.where, scratch, timeout)
            else:
                results[case] = run_warehouse_case(case, em, code.where, scratch, timeout)
    small, large = results.get("wh1m"), results.get("wh3m")
    peaks = [r.get("ours").median("peak_mib") for r in (small, large) if r]
    if len(peaks) == 2 and all(peaks):
        large.metrics["peak_over_wh1m"] = round(peaks[1] / peaks[0], 3)
    return list(results.values())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    wanted = [c for c in CASES if c in (args.only or CASES)]
    machine = machine_info()
    load_before = os.getloadavg()
    cases: list[CaseResult] = []
    with tempfile.TemporaryDirectory(prefix="nc-bench-") as tmp:
        scratch = Path(tmp)
        code = snapshot_code(scratch)
        _progress(f"cases {', '.join(wanted)}; {code.describe()}; load {_load(load_before)}")
        for case in wanted:
            if case not in (*WAREHOUSE_CASES, "coldstart"):
                cases.append(file_case(case, code, scratch, args))
        cold = None
        if "coldstart" in wanted:
            cold = cold_start.measure(PYTHON, code.where, args.rounds)
        warehouse = [c for c in wanted if c in WAREHOUSE_CASES]
        if warehouse:
            cases += warehouse_cases(warehouse, code, scratch, args.timeout)
    load = {"before": load_before, "after": os.getloadavg()}
    report = format_report(machine, code, cases, load)
    if cold:
        report += "\n" + "\n".join(cold_start.report(cold))
    print(report)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        targets = [t for c in cases if not c.skipped for t in targets_for(c)]
        document = {
            "finished_at": datetime.now(UTC).isoformat(),
            "machine": machine,
            "code": {"head": code.head, "uncommitted": code.dirty, "sha256": code.digest},
            "load_average": load,
            "cases": [asdict(c) for c in cases],
            "targets": [asdict(t) | {"verdict": t.verdict} for t in targets],
            "cold_start": asdict(cold) if cold else None,
            "report": report,
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")
        print(f"\nsaved {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
