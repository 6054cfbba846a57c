"""`make mutation`: break the rules of the core modules one at a time and check a test notices.

Each mutant is one small change to one module (flip a comparison, swap and/or, negate a
condition, drop a `not`, bump a number, swap True/False, drop a raise or a branch), run against
that module's own unit tests (clustering/cloud/events.py -> tests/test_events.py). A mutant is
"killed" when those tests fail, "survived" when they pass (a rule nobody pins), "timeout" when
they hang. Mutants listed in tools/mutation_equivalents.toml behave exactly like the original
(no test can tell them apart); they are left out of the score, each with the reason why.

The working tree is never edited: the repository is copied once per worker into a temporary
folder and each mutant is written into that copy, so an interrupted run cannot leave a mutant
behind, and other engineers' edits made during a long run do not leak into it.

Mutant ids stay stable when lines move: `module:function: mutation #occurrence`, where the
mutation is the changed expression before and after, as Python prints it.
"""

from __future__ import annotations

import argparse
import ast
import copy
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EQUIVALENTS = REPO / "tools" / "mutation_equivalents.toml"
# Each module and the unit tests that own its rules.
MODULES: dict[str, str] = {
    "events": "tests/test_events.py",
    "claims": "tests/test_claims.py",
    "settings": "tests/test_settings.py",
    "prepare": "tests/test_prepare.py",
    "table": "tests/test_table.py",
    "budget": "tests/test_budget.py",
}
# Where each module lives in the package's layer folders (the ids above stay short).
PATHS: dict[str, str] = {
    "events": "clustering/cloud/events.py",
    "claims": "clustering/adapters/claims.py",
    "settings": "clustering/settings.py",
    "prepare": "clustering/analysis/prepare.py",
    "table": "clustering/table.py",
    "budget": "clustering/adapters/budget.py",
}
# Not copied into the workers' trees: big, irrelevant, or the worker's own output.
SKIPPED_IN_COPY = (
    ".git",
    ".venv",
    ".tools",
    "output",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    "bench",
    "terraform",
)

STOP_GRACE_S = 20.0

COMPARE_SWAPS: dict[type, type] = {
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}


@dataclass(frozen=True)
class Mutant:
    module: str
    index: int  # position in the module's walk: which node the transformer changes
    kind: int  # which of the node's mutations
    function: str
    line: int
    before: str
    after: str
    occurrence: int = 1

    @property
    def id(self) -> str:
        suffix = f" #{self.occurrence}" if self.occurrence > 1 else ""
        return f"{self.module}:{self.function}: {self.before} -> {self.after}{suffix}"


@dataclass(frozen=True)
class Result:
    mutant: Mutant
    status: str  # killed, survived, timeout


# --- Generating mutants ----------------------------------------------------------------------


def _mutations(node: ast.AST) -> list[tuple[ast.AST, ast.AST]]:
    """(shown node, mutated copy of it) for every mutation of `node` itself."""
    out: list[tuple[ast.AST, ast.AST]] = []
    if isinstance(node, ast.Compare):
        for i, op in enumerate(node.ops):
            if type(op) in COMPARE_SWAPS:
                new = copy.deepcopy(node)
                new.ops[i] = COMPARE_SWAPS[type(op)]()
                out.append((node, new))
    elif isinstance(node, ast.BoolOp):
        new = copy.deepcopy(node)
        new.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        out.append((node, new))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        out.append((node, copy.deepcopy(node.operand)))
    elif isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):
            out.append((node, ast.Constant(not value)))
        elif isinstance(value, int | float):
            out.append((node, ast.Constant(value + 1)))
            if value == 1:
                out.append((node, ast.Constant(type(value)(0))))
    elif isinstance(node, ast.Raise):
        out.append((node, ast.Pass()))
    elif isinstance(node, ast.If | ast.While | ast.IfExp):
        if not _negation_elsewhere(node.test):
            new = copy.deepcopy(node)
            new.test = ast.UnaryOp(ast.Not(), new.test)
            out.append((node, new))
        if isinstance(node, ast.If):
            new = copy.deepcopy(node)
            new.body = [ast.Pass()]
            out.append((node, new))
            if node.orelse:
                new = copy.deepcopy(node)
                new.orelse = []
                out.append((node, new))
    return out


def _negation_elsewhere(test: ast.expr) -> bool:
    """Negating `not x`, `a == b`, `a in b` or `a is b` repeats a mutant made from the test
    itself (dropping the `not`, flipping the operator)."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return True
    exact = (ast.Eq, ast.NotEq, ast.In, ast.NotIn, ast.Is, ast.IsNot)
    return isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], exact)


def _shown(node: ast.AST, head_only: bool) -> str:
    """One line that names the mutation: an `if` shows its test and what its body became."""
    if isinstance(node, ast.Raise):
        exc = node.exc
        name = ast.unparse(exc.func if isinstance(exc, ast.Call) else exc) if exc else ""
        return f"raise {name}(...)" if isinstance(exc, ast.Call) else f"raise {name}".strip()
    if isinstance(node, ast.If):
        body = "pass" if _is_pass(node.body) else "..."
        tail = "" if not node.orelse else " else ..."
        return f"if {ast.unparse(node.test)}: {body}{tail}"
    text = ast.unparse(node)
    return text.splitlines()[0] if head_only else " ".join(text.split())


def _is_pass(body: list[ast.stmt]) -> bool:
    return len(body) == 1 and isinstance(body[0], ast.Pass)


class _Walker:
    """Numbers the nodes of a module in a fixed order and knows each one's function."""

    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree

    def nodes(self) -> Iterator[tuple[int, ast.AST, str]]:
        index = 0
        stack: list[tuple[ast.AST, str]] = [(self.tree, "<module>")]
        while stack:
            node, scope = stack.pop()
            yield index, node, scope
            index += 1
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                scope = node.name if scope == "<module>" else f"{scope}.{node.name}"
            children = [c for c in ast.iter_child_nodes(node) if not _skipped(node, c)]
            stack.extend((child, scope) for child in reversed(children))


def _skipped(parent: ast.AST, child: ast.AST) -> bool:
    """Parts never worth mutating: annotations (not evaluated under `from __future__ import
    annotations`), decorators (frozen=True is not a domain rule), docstrings, `__all__`, and
    imports."""
    if isinstance(parent, ast.FunctionDef | ast.ClassDef) and child in parent.decorator_list:
        return True
    if isinstance(parent, ast.arg | ast.AnnAssign) and child is parent.annotation:
        return True
    if isinstance(parent, ast.FunctionDef | ast.AsyncFunctionDef) and child is parent.returns:
        return True
    if isinstance(child, ast.Import | ast.ImportFrom):
        return True
    if isinstance(child, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == "__all__" for t in child.targets
    ):
        return True
    return isinstance(child, ast.Expr) and isinstance(child.value, ast.Constant)


def generate(module: str, source: str) -> list[Mutant]:
    tree = ast.parse(source)
    mutants: list[Mutant] = []
    seen: dict[tuple[str, str, str], int] = {}
    for index, node, scope in _Walker(tree).nodes():
        for kind, (shown, mutated) in enumerate(_mutations(node)):
            head_only = isinstance(node, ast.While)
            before, after = _shown(shown, head_only), _shown(mutated, head_only)
            if before == after:
                continue
            key = (scope, before, after)
            seen[key] = seen.get(key, 0) + 1
            line = getattr(node, "lineno", 0)
            mutants.append(Mutant(module, index, kind, scope, line, before, after, seen[key]))
    return mutants


def mutated_source(source: str, mutant: Mutant) -> str:
    tree = ast.parse(source)
    for index, node, _ in _Walker(tree).nodes():
        if index == mutant.index:
            _, replacement = _mutations(node)[mutant.kind]
            _replace(tree, node, replacement)
            return ast.unparse(ast.fix_missing_locations(tree))
    raise LookupError(f"mutant {mutant.id} no longer matches the source")


def _replace(tree: ast.AST, old: ast.AST, new: ast.AST) -> None:
    for parent in ast.walk(tree):
        for field, value in ast.iter_fields(parent):
            if value is old:
                setattr(parent, field, new)
                return
            if isinstance(value, list) and any(item is old for item in value):
                value[[item is old for item in value].index(True)] = new
                return
    raise LookupError("node not found")


# --- Running them ----------------------------------------------------------------------------

_WORKTREE: Path | None = None


def _init_worker(parent: str) -> None:
    """Copy the repository once per worker (the real data travels with it, in data/)."""
    global _WORKTREE
    root = Path(tempfile.mkdtemp(prefix="worker-", dir=parent))
    _WORKTREE = root / "repo"
    shutil.copytree(REPO, _WORKTREE, ignore=shutil.ignore_patterns(*SKIPPED_IN_COPY))
    for name in (".tools",):
        if (REPO / name).exists():
            (_WORKTREE / name).symlink_to((REPO / name).resolve())


def _pytest(test_file: str, timeout: float) -> str:
    assert _WORKTREE is not None
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-p",
        "no:cacheprovider",
        "--no-header",
        test_file,
    ]
    # Its own process group: on a timeout, Ctrl-C lets pytest tear its fixtures down (the
    # emulators run in groups of their own), and a kill of the group follows if it hangs.
    with subprocess.Popen(
        command,
        cwd=_WORKTREE,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    ) as tests:
        try:
            returncode = tests.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(tests.pid, signal.SIGINT)
            try:
                tests.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                os.killpg(tests.pid, signal.SIGKILL)
                tests.wait()
            return "timeout"
    return "survived" if returncode == 0 else "killed"


def _run_one(job: tuple[Mutant, str, float]) -> Result:
    mutant, source, timeout = job
    assert _WORKTREE is not None
    target = _WORKTREE / PATHS[mutant.module]
    target.write_text(mutated_source(source, mutant))
    try:
        return Result(mutant, _pytest(MODULES[mutant.module], timeout))
    finally:
        target.write_text(source)


def _baseline(module: str) -> float:
    started = time.perf_counter()
    status = _pytest(MODULES[module], timeout=600)
    if status != "survived":
        raise SystemExit(f"{MODULES[module]} fails without any mutant: fix the suite first")
    return time.perf_counter() - started


def load_equivalents(path: Path) -> dict[str, str]:
    """The ids of the equivalent mutants and why each is equivalent."""
    if not path.exists():
        return {}
    entries = tomllib.loads(path.read_text()).get("equivalent", [])
    for entry in entries:
        if not str(entry.get("why", "")).strip():
            raise SystemExit(f"{path}: equivalent mutant {entry.get('id')!r} has no `why`")
    return {entry["id"]: entry["why"] for entry in entries}


# --- Report ----------------------------------------------------------------------------------


def report(results: list[Result], ignored: dict[str, list[Mutant]], modules: list[str]) -> float:
    print(
        f"{'module':<10}{'mutants':>8}{'killed':>8}{'survived':>10}{'timeout':>9}"
        f"{'equivalent':>12}{'score':>9}"
    )
    totals = [0, 0, 0, 0, 0]
    for module in [*modules, "total"]:
        mine = [r for r in results if module in ("total", r.mutant.module)]
        equivalent = sum(len(v) for k, v in ignored.items() if module in ("total", k))
        counts = [len(mine) + equivalent] + [
            sum(r.status == s for r in mine) for s in ("killed", "survived", "timeout")
        ]
        counts.append(equivalent)
        if module != "total":
            totals = [a + b for a, b in zip(totals, counts, strict=True)]
        print(
            f"{module:<10}{counts[0]:>8}{counts[1]:>8}{counts[2]:>10}{counts[3]:>9}"
            f"{counts[4]:>12}{_score(counts):>8.1f}%"
        )
    unkilled = sorted(
        (r for r in results if r.status != "killed"), key=lambda r: (r.mutant.module, r.mutant.line)
    )
    if unkilled:
        print("\nSurvivors and timeouts (file:line  id):")
    for r in unkilled:
        tag = " [timeout]" if r.status == "timeout" else ""
        print(f"  {PATHS[r.mutant.module]}:{r.mutant.line}  {r.mutant.id}{tag}")
    return _score(totals)


def _score(counts: list[int]) -> float:
    """Killed (timeouts count as killed: the tests noticed) over non-equivalent mutants."""
    total = counts[0] - counts[4]
    return 100.0 * (counts[1] + counts[3]) / total if total else 100.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "modules",
        nargs="*",
        metavar="MODULE",
        help=f"modules to mutate (default: {' '.join(MODULES)})",
    )
    parser.add_argument("--jobs", type=int, default=2, help="parallel workers (default 2)")
    parser.add_argument(
        "--fail-under",
        type=float,
        default=95.0,
        help="exit 1 below this percentage killed (default 95)",
    )
    parser.add_argument("--list", action="store_true", help="print the mutant ids and stop")
    args = parser.parse_args(argv)
    args.modules = args.modules or list(MODULES)
    unknown = [m for m in args.modules if m not in MODULES]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}")

    equivalents = load_equivalents(EQUIVALENTS)
    sources = {m: (REPO / PATHS[m]).read_text() for m in args.modules}
    mutants = [mutant for m in args.modules for mutant in generate(m, sources[m])]
    if args.list:
        for mutant in mutants:
            tag = "  [equivalent]" if mutant.id in equivalents else ""
            print(f"{PATHS[mutant.module]}:{mutant.line}  {mutant.id}{tag}")
        return 0
    ignored: dict[str, list[Mutant]] = {}
    for mutant in mutants:
        if mutant.id in equivalents:
            ignored.setdefault(mutant.module, []).append(mutant)
    stale = set(equivalents) - {m.id for m in mutants}
    stale = {i for i in stale if i.split(":", 1)[0] in args.modules}
    todo = [m for m in mutants if m.id not in equivalents]

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mutation-") as parent:
        _init_worker(parent)
        timeouts = {m: max(30.0, 5 * _baseline(m)) for m in args.modules}
        print(
            f"{len(todo)} mutants to run ({sum(map(len, ignored.values()))} equivalent "
            f"ignored), {args.jobs} workers",
            flush=True,
        )
        jobs = [(m, sources[m.module], timeouts[m.module]) for m in todo]
        with ProcessPoolExecutor(args.jobs, initializer=_init_worker, initargs=(parent,)) as pool:
            results = list(pool.map(_run_one, jobs))
    print(f"ran in {time.perf_counter() - started:.0f} s\n")
    score = report(results, ignored, args.modules)
    for entry in sorted(stale):
        print(f"warning: {EQUIVALENTS.name} lists {entry!r}, which no longer exists: remove it")
    print(f"\nscore {score:.1f}% of non-equivalent mutants killed (required: {args.fail_under}%)")
    return 0 if score >= args.fail_under else 1


if __name__ == "__main__":
    sys.exit(main())
