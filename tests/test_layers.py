"""The package's folders are its layers, and imports only go down (README, "The layers").

Every import counts, including the ones inside functions that keep the package cheap to import:
a lazy import upward is still a dependency upward.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "clustering"

# Lowest first. A module may import from its own layer and from any layer below it.
LAYERS = (
    (
        "base",
        (
            "clustering",
            "clustering.naming",
            "clustering.options",
            "clustering.settings",
            "clustering.table",
            "clustering.schemas",
        ),
    ),
    ("analysis", ("clustering.analysis",)),
    ("outputs", ("clustering.outputs",)),
    ("adapters", ("clustering.adapters",)),
    ("job", ("clustering.job", "clustering.stages", "clustering.engines")),
    ("cloud", ("clustering.cloud",)),
    ("entry", ("clustering.cli", "clustering.__main__", "main")),
)
# Third-party packages a layer may never touch, whatever its rank.
FORBIDDEN = {
    "analysis": ("google", "functions_framework", "matplotlib", "jinja2"),
    "outputs": ("google", "functions_framework"),
}


def layer_of(module: str) -> str:
    """The layer of a dotted module name: the longest matching prefix wins."""
    best, length = None, -1
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and len(prefix) > length:
                best, length = name, len(prefix)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS")
    return best


def rank(layer: str) -> int:
    return [name for name, _ in LAYERS].index(layer)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """Every module an import statement names, with its line, relative imports resolved."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")
                anchor = anchor if is_package else anchor[:-1]
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
            # `from clustering import analysis` names a sub-package, not only the package.
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                if (ROOT / candidate.replace(".", "/")).is_dir() or (
                    ROOT / (candidate.replace(".", "/") + ".py")
                ).is_file():
                    found.append((node.lineno, candidate))
    return found


def violations(path: Path, source: str | None = None) -> list[str]:
    """What `path` imports against the layering, one line each."""
    module = module_name(path)
    own = layer_of(module)
    source = path.read_text(encoding="utf-8") if source is None else source
    problems = []
    for line, name in imported(source, module, path.name == "__init__.py"):
        top = name.split(".")[0]
        where = f"{path.relative_to(ROOT)}:{line}"
        if top in FORBIDDEN.get(own, ()):
            problems.append(f"{where}: the {own} layer imports {name}")
        elif top in {"clustering", "main"} and rank(layer_of(name)) > rank(own):
            problems.append(f"{where}: {own} imports {name} ({layer_of(name)}, a layer above)")
    return problems


def sources() -> list[Path]:
    return [*sorted(PACKAGE.rglob("*.py")), ROOT / "main.py"]


def test_imports_only_go_down():
    problems = [problem for path in sources() for problem in violations(path)]
    assert problems == []


def test_every_module_is_in_a_layer():
    for path in sources():
        layer_of(module_name(path))


def test_few_modules_are_left_at_the_top_of_the_package():
    assert len(list(PACKAGE.glob("*.py"))) <= 8


@pytest.mark.parametrize(
    ("path", "line", "problem"),
    [
        (
            "clustering/analysis/model.py",
            "from clustering.outputs import charts",
            "analysis imports clustering.outputs.charts (outputs, a layer above)",
        ),
        (
            "clustering/analysis/model.py",
            "def f():\n    from google.cloud import bigquery",
            "the analysis layer imports google.cloud",
        ),
        (
            "clustering/analysis/prepare.py",
            "import functions_framework",
            "the analysis layer imports functions_framework",
        ),
        (
            "clustering/outputs/report.py",
            "from clustering import job",
            "outputs imports clustering.job (job, a layer above)",
        ),
        (
            "clustering/adapters/gcs.py",
            "from ..cloud.events import AUDIT_LOG_TYPE",
            "adapters imports clustering.cloud.events (cloud, a layer above)",
        ),
        (
            "clustering/settings.py",
            "from clustering.analysis import model",
            "base imports clustering.analysis.model (analysis, a layer above)",
        ),
    ],
)
def test_the_check_catches_an_upward_import(path, line, problem):
    # The check itself can fail: each forbidden import, added to a real module, is reported.
    target = ROOT / path
    found = violations(target, target.read_text(encoding="utf-8") + "\n" + line + "\n")
    assert problem in [p.split(": ", 1)[1] for p in found]
    assert all("a layer above" in p or "layer imports" in p for p in found)


def test_a_downward_import_is_allowed():
    target = ROOT / "clustering/cloud/handler.py"
    source = target.read_text(encoding="utf-8") + "\nfrom clustering.analysis import model\n"
    assert violations(target, source) == []


def own_imports(path: Path, source: str | None = None) -> list[tuple[int, str, tuple[str, ...]]]:
    """Each `from clustering... import names` of a module: line, module, names."""
    module = module_name(path)
    source = path.read_text(encoding="utf-8") if source is None else source
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            base = resolved(node, module, path.name == "__init__.py")
            if base.split(".")[0] == "clustering":
                found.append((node.lineno, base, tuple(a.name for a in node.names)))
    return found


def private_imports(path: Path, source: str | None = None) -> list[str]:
    """Another module's private names this module imports (`from x import _y`) or reaches
    through an imported module (`x._y` where `x` was imported from the package)."""
    module = module_name(path)
    source = path.read_text(encoding="utf-8") if source is None else source
    problems = []
    modules = set()
    for line, base, names in own_imports(path, source):
        for name in names:
            if name.startswith("_") and not name.startswith("__") and base != module:
                problems.append(f"{path.relative_to(ROOT)}:{line}: imports {base}.{name}")
            modules.add(name)
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            ours = [a for a in node.names if a.name.split(".")[0] == "clustering"]
            modules |= {a.asname or a.name.split(".")[-1] for a in ours}
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ):
            where = f"{path.relative_to(ROOT)}:{node.lineno}"
            problems.append(f"{where}: uses {node.value.id}.{node.attr}")
    return problems


def import_graph() -> dict[str, set[str]]:
    """Which of the package's modules each module imports, lazy imports included: `from p
    import m` names module p.m when m is one, else p itself."""
    known = {module_name(path) for path in sources()}
    graph = {}
    for path in sources():
        module = module_name(path)
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = resolved(node, module, path.name == "__init__.py")
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    targets.add(sub if sub in known else base)
        graph[module] = {t for t in targets if t in known and t != module}
    return graph


def resolved(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module an ImportFrom names."""
    if not node.level:
        return node.module or ""
    anchor = module.split(".")
    anchor = anchor if is_package else anchor[:-1]
    anchor = anchor[: len(anchor) - (node.level - 1)]
    return ".".join([*anchor, node.module] if node.module else anchor)


def cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The import cycles of `graph` (each once, as the path that closes it)."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                found.append((*path[path.index(target) :], target))
            elif target not in state:
                visit(target, [*path, target])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_no_module_imports_another_modules_private_names():
    problems = [p for path in sources() for p in private_imports(path)]
    assert problems == []


def test_no_modules_import_each_other():
    # Any circle, lazy imports included: a package's __init__ importing its submodules is
    # how a package is made, a submodule importing the package's own names back is a circle.
    graph = import_graph()
    assert cycles(graph) == []


def test_the_private_import_check_catches_both_forms():
    target = ROOT / "clustering/job.py"
    source = target.read_text(encoding="utf-8")
    assert private_imports(target, source) == []
    found = private_imports(target, source + "\nfrom clustering.stages.fit import _stability\n")
    assert [p.split(": ", 1)[1] for p in found] == ["imports clustering.stages.fit._stability"]
    reached = source + "\nfrom clustering.stages import fit\nfit._stability(None, None)\n"
    assert [p.split(": ", 1)[1] for p in private_imports(target, reached)] == [
        "uses fit._stability"
    ]


def test_the_cycle_check_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [("a", "b", "c", "a")]
    assert cycles({"a": {"b"}, "b": set()}) == []
