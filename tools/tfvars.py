"""The offline checks of Terraform files shared by tests/test_terraform.py and `make
check-tfvars TFVARS=path`: the configuration parsed with the HCL parser that ships with checkov
(bc-python-hcl2, module `hcl2`, in .tools/checkov, so it runs as a subprocess that prints
JSON), a small evaluator that renders the function's environment for a set of variables,
checkov, and `check_tfvars`, which applies them all to a user's own .tfvars.

No Terraform registry is reachable here, so `terraform validate/plan` cannot run: what can be
checked offline is that every variable a .tfvars sets is declared and of its declared type,
that each value passes the regexes of the variable's validation rules, that the environment
the function would get is accepted by the code's settings validation (JobSettings.from_env,
the same rules the function applies at start-up), and checkov with the file.

Parser conventions: every attribute value is wrapped in a one-element list, blocks are lists
of dicts, and expressions come back as "${...}" strings.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TF_DIR = ROOT / "terraform"
CHECKOV_BIN = ROOT / ".tools" / "checkov" / "bin"
# No network calls from the tools: Terraform's update check and checkov's platform mapping.
TOOL_ENV = {**os.environ, "CHECKPOINT_DISABLE": "1", "BC_SKIP_MAPPING": "TRUE"}
# A project id used to render the configuration with its defaults (project_id has none).
DEMO_PROJECT = "demo-project-1"
FUNCTION = "google_cloudfunctions2_function.recluster"


class MissingTool(RuntimeError):
    """A tool environment under .tools/ is not built."""


def tool(path: Path) -> Path:
    if not path.exists():
        where = path.relative_to(ROOT)
        target = "provider-schema" if "provider-schema" in str(path) else "terraform-tools"
        raise MissingTool(f"{where} is missing: run `make {target}` (make test builds it)")
    return path


def run(args: list[str | Path], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        cwd=ROOT,
        env=TOOL_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# --- The parsed configuration ---------------------------------------------------------------


def one(value: Any) -> Any:
    """An attribute's value without the parser's one-element list."""
    if isinstance(value, list) and len(value) == 1:
        return value[0]
    return value


def blocks(body: dict, key: str) -> list[dict]:
    """The nested blocks `key` of a body (possibly none)."""
    return list(body.get(key, []))


def block(body: dict, key: str) -> dict:
    found = blocks(body, key)
    assert len(found) == 1, f"expected one {key} block, found {len(found)}"
    return found[0]


@dataclass
class Config:
    resources: dict[tuple[str, str], dict]
    data: dict[tuple[str, str], dict]
    variables: dict[str, dict]
    locals: dict[str, Any]
    outputs: dict[str, dict]
    sources: dict[str, str]  # file name -> raw text
    providers: dict[str, dict]  # required_providers: name -> {source, version}

    def resource(self, address: str) -> dict:
        rtype, name = address.split(".")
        assert (rtype, name) in self.resources, f"resource {address} is missing"
        return self.resources[(rtype, name)]

    def of_type(self, rtype: str) -> dict[str, dict]:
        return {name: body for (t, name), body in self.resources.items() if t == rtype}

    def default(self, name: str) -> Any:
        return one(self.variables[name]["default"])


PARSE_SCRIPT = """
import json, sys
import hcl2
parsed = {}
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as handle:
        parsed[path] = hcl2.load(handle)
json.dump(parsed, sys.stdout, default=str)
"""


def parse_config() -> Config:
    """terraform/*.tf as the HCL parser reads them."""
    files = sorted(TF_DIR.glob("*.tf"))
    assert files, "terraform/ has no .tf files"
    python = tool(CHECKOV_BIN / "python")
    result = run([python, "-c", PARSE_SCRIPT, *files], timeout=60)
    assert result.returncode == 0, f"HCL parsing failed:\n{result.stderr}"
    parsed: dict[str, dict] = json.loads(result.stdout)

    resources: dict[tuple[str, str], dict] = {}
    data: dict[tuple[str, str], dict] = {}
    variables: dict[str, dict] = {}
    local_values: dict[str, Any] = {}
    outputs: dict[str, dict] = {}
    providers: dict[str, dict] = {}
    for path, doc in parsed.items():
        for settings_block in doc.get("terraform", []):
            for required in settings_block.get("required_providers", []):
                providers.update({name: one(spec) for name, spec in required.items()})
        for target, key in ((resources, "resource"), (data, "data")):
            for entry in doc.get(key, []):
                for rtype, named in entry.items():
                    for name, body in named.items():
                        assert (rtype, name) not in target, f"{rtype}.{name} defined twice"
                        target[(rtype, name)] = body
        for entry in doc.get("variable", []):
            variables.update(entry)
        for entry in doc.get("output", []):
            outputs.update(entry)
        for entry in doc.get("locals", []):
            for name, value in entry.items():
                if not name.startswith("__"):
                    assert name not in local_values, f"local.{name} defined twice ({path})"
                    local_values[name] = one(value)
    sources = {f.name: f.read_text(encoding="utf-8") for f in files}
    return Config(resources, data, variables, local_values, outputs, sources, providers)


# --- A small evaluator: the configuration rendered with a set of variables -------------------


class Unsupported(Exception):
    pass


def split_template(text: str) -> Iterator[tuple[bool, str]]:
    """Split "a${x}b" into (False, "a"), (True, "x"), (False, "b"), braces balanced."""
    i = 0
    while i < len(text):
        start = text.find("${", i)
        if start < 0:
            yield False, text[i:]
            return
        if start > i:
            yield False, text[i:start]
        depth, j = 0, start + 1
        while j < len(text):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        yield True, text[start + 2 : j]
        i = j + 1


class Renderer:
    """Evaluates the few expression forms the job's values use: var.X (defaults), local.X,
    local.X.Y, tostring(), jsonencode(), jsondecode(file(...)) of a repository file,
    `var.X == null ? "..." : "..."`, `var.X == null ? a.b : c.d`, and resource attributes
    written in the configuration. Anything
    else raises Unsupported, so a new form is noticed here, not in a deploy."""

    def __init__(
        self,
        config: Config,
        overrides: dict[str, Callable[[], Any]],
        values: dict[str, Any] | None = None,
    ):
        self.config = config
        self.overrides = overrides
        # Variables set by a .tfvars file; the others take their defaults.
        self.values = values or {}

    def render(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.render(v) for v in value]
        if isinstance(value, dict):
            return {k: self.render(v) for k, v in value.items() if not k.startswith("__")}
        if not isinstance(value, str):
            return value
        parts = list(split_template(value))
        if len(parts) == 1 and parts[0][0]:
            return self.expr(parts[0][1].strip())
        return "".join(self.text(self.expr(p.strip())) if is_expr else p for is_expr, p in parts)

    @staticmethod
    def text(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)

    def expr(self, expr: str) -> Any:
        if expr in self.overrides:
            return self.overrides[expr]()
        if m := re.fullmatch(r"var\.(\w+)", expr):
            if m.group(1) in self.values:
                return self.values[m.group(1)]
            if m.group(1) == "project_id":
                return DEMO_PROJECT
            return self.config.default(m.group(1))
        if m := re.fullmatch(r"coalesce\(([\w.]+),([\w.]+)\)", expr.replace(" ", "")):
            first = self.expr(m.group(1))
            return self.expr(m.group(2)) if first in (None, "") else first
        if m := re.fullmatch(r'(var\.\w+) == None \? "(.*?)" : "(.*)"', expr):
            branch = m.group(2) if self.expr(m.group(1)) is None else m.group(3)
            return self.render(branch)
        if m := re.fullmatch(r"(var\.\w+) == None \? ([\w.]+) : ([\w.]+)", expr):
            return self.expr(m.group(2) if self.expr(m.group(1)) is None else m.group(3))
        if m := re.fullmatch(r"local\.(\w+)", expr):
            return self.render(self.config.locals[m.group(1)])
        if m := re.fullmatch(r"local\.(\w+)\.(\w+)", expr):
            return self.expr(f"local.{m.group(1)}")[m.group(2)]
        if m := re.fullmatch(r'jsondecode\(file\("\$\{local\.repo_root\}/([\w./-]+)"\)\)', expr):
            assert self.config.locals["repo_root"] == "${path.module}/.."
            return json.loads((ROOT / m.group(1)).read_text(encoding="utf-8"))
        if m := re.fullmatch(r"tostring\((.+)\)", expr):
            return self.text(self.expr(m.group(1).strip()))
        if m := re.fullmatch(r"jsonencode\((.+)\)", expr):
            return json.dumps(self.expr(m.group(1).strip()), separators=(",", ":"))
        if m := re.fullmatch(r"(google_\w+)\.(\w+)\.(\w+)", expr):
            body = self.config.resource(f"{m.group(1)}.{m.group(2)}")
            attr = m.group(3)
            if m.group(1) == "google_service_account" and attr == "email":
                account = self.render(one(body["account_id"]))
                return f"{account}@{self.render(one(body['project']))}.iam.gserviceaccount.com"
            if attr in body:
                return self.render(one(body[attr]))
        raise Unsupported(f"cannot evaluate ${{{expr}}}: extend Renderer in tools/tfvars.py")


def make_renderer(config: Config, values: dict[str, Any] | None = None) -> Renderer:
    """A Renderer for the defaults, or for the variables a .tfvars file sets (`values`)."""
    values = values or {}

    def value(name: str) -> Any:
        return values.get(name, config.default(name))

    # Expressions whose evaluation would need a real HCL engine, written out here.
    project = values.get("project_id", DEMO_PROJECT)
    overrides: dict[str, Callable[[], Any]] = {
        "local.artifacts_bucket": lambda: (
            value("artifacts_bucket_name") or f"{project}-{value('name')}-artifacts"
        ),
        "local.output_dataset_id": lambda: value("dataset_id"),
    }
    # Keep the overrides honest: they must describe what the configuration says.
    assert "coalesce(var.artifacts_bucket_name" in config.locals["artifacts_bucket"]
    assert "-artifacts" in config.locals["artifacts_bucket"]
    assert config.default("artifacts_bucket_name") is None
    assert re.fullmatch(
        r"\$\{var\.create_dataset \? google_bigquery_dataset\.output\[0\]\.dataset_id"
        r" : var\.dataset_id\}",
        config.locals["output_dataset_id"],
    )
    return Renderer(config, overrides, values)


def function_environment(config: Config) -> dict[str, Any]:
    service = block(config.resource(FUNCTION), "service_config")
    assert one(service["environment_variables"]) == "${local.function_environment}"
    env = config.locals["function_environment"]
    assert isinstance(env, dict)
    return {k: v for k, v in env.items() if not k.startswith("__")}


# --- checkov and a .tfvars file ---------------------------------------------------------------


def checkov(*options: str) -> dict:
    """checkov's one terraform report on terraform/, offline, with extra `options`."""
    result = run(
        [
            tool(CHECKOV_BIN / "checkov"),
            *("--directory", "terraform", "--framework", "terraform", "--skip-download"),
            *options,
            *("--output", "json"),
        ]
    )
    assert result.returncode in (0, 1), (
        f"checkov crashed (rc {result.returncode}):\n{result.stderr}"
    )
    report = json.loads(result.stdout)
    # One framework gives one report object; several would give a list.
    reports = report if isinstance(report, list) else [report]
    assert len(reports) == 1, f"expected one terraform report, got {len(reports)}"
    return reports[0]


TFVARS_SCRIPT = """
import json, sys
import hcl2
with open(sys.argv[1], encoding="utf-8") as handle:
    json.dump(hcl2.load(handle), sys.stdout)
"""


def validation_patterns(config: Config, name: str) -> list[re.Pattern]:
    """The regexes a variable's validation rules apply, as Python patterns."""
    found = []
    for rule in blocks(config.variables[name], "validation"):
        for pattern in re.findall(r'regex\("(.+?)",', one(rule["condition"])):
            found.append(re.compile(pattern.replace("\\\\", "\\")))
    return found


def read_tfvars(path: Path) -> dict[str, Any]:
    """A .tfvars file's variables, as Terraform reads them (ValueError when it does not
    parse)."""
    result = run([tool(CHECKOV_BIN / "python"), "-c", TFVARS_SCRIPT, path], timeout=60)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValueError(f"{path} does not parse as HCL: {last}")
    return {name: one(value) for name, value in json.loads(result.stdout).items()}


# A variable's declared type -> the Python types its value may have (None: null, always).
TYPES: dict[str, tuple[type, ...]] = {
    "string": (str, int, float, bool),  # Terraform converts numbers and bools to strings
    "number": (int, float),
    "bool": (bool,),
    "list": (list,),
    "set": (list,),
    "map": (dict,),
    "object": (dict,),
}
NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")


def converted(declared: str, value: Any) -> Any:
    """`value` as Terraform converts it to the declared type ("10" to a number, "true" to a
    bool, 5 to "5"); ValueError when it cannot be."""
    kind = re.split(r"[(\[]", declared)[0]
    if value is None or kind not in TYPES:
        return value
    if kind == "number" and isinstance(value, str) and NUMBER.fullmatch(value.strip()):
        number = float(value)
        return int(number) if number.is_integer() else number
    if kind == "bool" and value in ("true", "false"):
        return value == "true"
    if not isinstance(value, TYPES[kind]) or (kind == "number" and isinstance(value, bool)):
        raise ValueError(f"{value!r} is not a {declared}")
    if kind == "string" and not isinstance(value, str):
        return json.dumps(value)
    return value


def variable_problems(config: Config, values: dict[str, Any]) -> list[str]:
    """Each variable set that is not declared, not of its declared type, or whose value
    fails one of the regexes of its validation rules. `values` are converted in place to
    their declared types, as Terraform converts them."""
    import difflib

    problems = []
    for name, value in values.items():
        if name not in config.variables:
            close = difflib.get_close_matches(name, list(config.variables), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            problems.append(f"{name}: not a variable of terraform/{hint}")
            continue
        declared = str(one(config.variables[name].get("type", "any"))).strip("${}")
        try:
            value = values[name] = converted(declared, value)
        except ValueError as error:
            problems.append(f"{name}: {error}")
            continue
        # Maps' rules test keys and values apart: the settings validation checks those.
        items = value if isinstance(value, list) else [value]
        for pattern in validation_patterns(config, name):
            for item in items:
                if isinstance(item, str) and not pattern.search(item):
                    problems.append(f"{name}: {item!r} does not match {pattern.pattern}")
    return problems


def settings_problem(config: Config, values: dict[str, Any]) -> str | None:
    """Why the function would refuse the environment these variables render to, if it would:
    the code's own settings validation, as at the function's start-up."""
    from clustering import InputError
    from clustering.settings import JobSettings

    try:
        env = make_renderer(config, values).render(function_environment(config))
        JobSettings.from_env(env)
    except InputError as error:
        return f"the function would refuse these settings: {error}"
    return None


def checkov_problems(path: Path) -> list[str]:
    """checkov's failed checks and parsing errors on terraform/ with the file's variables."""
    report = checkov("--var-file", str(path))
    results = report["results"]
    failed = [
        f"checkov {c['check_id']} {c['resource']}: {c['check_name']}"
        for c in results["failed_checks"]
    ]
    if report["summary"]["parsing_errors"]:
        failed.append(f"checkov could not parse: {results.get('parsing_errors')}")
    return failed


def check_tfvars(path: Path) -> list[str]:
    """Every problem found in a user's own .tfvars offline; [] when it passes."""
    config = parse_config()
    values = read_tfvars(path)
    problems = variable_problems(config, values)
    if not problems:  # the environment renders only from values of the right types
        problem = settings_problem(config, values)
        problems += [problem] if problem else []
    return problems + checkov_problems(path)


def main(argv: list[str]) -> int:
    """`python tools/tfvars.py FILE.tfvars`: one line per problem on stderr, exit 1 when there
    are any, 2 on bad usage."""
    if len(argv) != 1 or not argv[0]:
        print("error: give one .tfvars file: make check-tfvars TFVARS=path", file=sys.stderr)
        return 2
    path = Path(argv[0]).resolve()
    if not path.is_file():
        print(f"error: {argv[0]}: no such file", file=sys.stderr)
        return 2
    try:
        problems = check_tfvars(path)
    except (MissingTool, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"{argv[0]}: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"{argv[0]}: variables, settings and checkov pass (offline; run terraform plan too)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))  # the clustering package, run as a script from anywhere
    sys.exit(main(sys.argv[1:]))
