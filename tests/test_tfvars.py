"""`make check-tfvars TFVARS=path` (tools/tfvars.py): a user's own .tfvars checked offline as
tests/test_terraform.py checks the shipped example (issue 21)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tools import tfvars

pytestmark = pytest.mark.terraform

EXAMPLE = tfvars.TF_DIR / "examples" / "community-areas.tfvars"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.tfvars"
    path.write_text(text, encoding="utf-8")
    return path


def check(*argv: str) -> subprocess.CompletedProcess[str]:
    """The tool as `make check-tfvars` runs it."""
    return subprocess.run(
        [sys.executable, str(tfvars.ROOT / "tools" / "tfvars.py"), *argv],
        cwd=tfvars.ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_the_shipped_example_passes():
    done = check(str(EXAMPLE.relative_to(tfvars.ROOT)))
    assert done.returncode == 0, done.stderr
    assert "variables, settings and checkov pass" in done.stdout


def test_each_kind_of_mistake_is_one_line_naming_the_variable(tmp_path):
    path = write(
        tmp_path,
        'project_id = "city-analytics-prod"\n'
        'key_colum = "area"\n'  # a typo
        'k_max = "ten"\n'  # not a number
        'clusters_table_id = "bad-name!"\n',  # fails the variable's regex
    )
    done = check(str(path))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines == [
        f"{path}: key_colum: not a variable of terraform/ (did you mean 'key_column'?)",
        f"{path}: k_max: 'ten' is not a number",
        f"{path}: clusters_table_id: 'bad-name!' does not match ^[A-Za-z0-9_]{{1,1024}}$",
    ]


def test_values_the_function_would_refuse_at_start_up_are_caught(tmp_path):
    # Each variable alone is fine; the settings they render to are not (one column for the
    # names and the residents), which only the code's own validation knows.
    path = write(
        tmp_path,
        'project_id = "city-analytics-prod"\nkey_column = "tract"\npopulation_column = "tract"\n',
    )
    done = check(str(path))
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith(f"{path}: the function would refuse these settings: KEY_COLUMN")
    assert "are both 'tract'" in line


def test_values_are_taken_as_terraform_converts_them(tmp_path):
    path = write(
        tmp_path,
        'project_id = "city-analytics-prod"\nk_min = "3"\nk_max = 8\n'
        'feature_labels = { PCT_POVERTY = "households in poverty" }\nrow_noun = "ward"\n',
    )
    assert tfvars.check_tfvars(path) == []
    config = tfvars.parse_config()
    values = tfvars.read_tfvars(path)
    assert tfvars.variable_problems(config, values) == [] and values["k_min"] == 3
    env = tfvars.make_renderer(config, values).render(tfvars.function_environment(config))
    assert (env["K_MIN"], env["K_MAX"], env["ROW_NOUN"]) == ("3", "8", "ward")
    assert env["FEATURE_LABELS"] == '{"PCT_POVERTY":"households in poverty"}'
    wrong = write(tmp_path, 'project_id = "city-analytics-prod"\nk_min = 3\nk_max = 2\n')
    assert tfvars.check_tfvars(wrong) == [
        "the function would refuse these settings: K_MIN=3, K_MAX=2 (--k-min, --k-max): "
        "need 2 <= K_MIN <= K_MAX"
    ]


def test_checkov_runs_with_the_users_file_and_its_failures_are_reported(tmp_path, monkeypatch):
    real, seen = tfvars.checkov, []
    failed = {"check_id": "CKV_GCP_1", "resource": "google_x.y", "check_name": "a rule"}
    report = {"results": {"failed_checks": [failed]}, "summary": {"parsing_errors": 0}}
    # checkov's report stands in here only to show its failures reach the user; the real
    # checkov runs below.
    monkeypatch.setattr(tfvars, "checkov", lambda *options: seen.append(options) or report)
    assert tfvars.checkov_problems(tmp_path / "x.tfvars") == [
        "checkov CKV_GCP_1 google_x.y: a rule"
    ]
    assert seen == [("--var-file", str(tmp_path / "x.tfvars"))]
    summary = real("--var-file", str(EXAMPLE))["summary"]
    assert summary["passed"] > 0 and summary["failed"] == 0


def test_a_file_that_does_not_parse_or_is_missing_exits_2(tmp_path):
    broken = write(tmp_path, 'project_id = "city\n')
    done = check(str(broken))
    assert done.returncode == 2 and done.stderr.startswith("error: ")
    assert "does not parse as HCL" in done.stderr
    missing = check(str(tmp_path / "none.tfvars"))
    assert missing.returncode == 2 and "no such file" in missing.stderr
    assert check().returncode == 2


def test_make_check_tfvars_runs_the_tool_on_the_given_file():
    planned = subprocess.run(
        ["make", "-n", "--no-print-directory", "check-tfvars", "TFVARS=my.tfvars"],
        cwd=tfvars.ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout.strip().splitlines()[-1] == ".venv/bin/python tools/tfvars.py my.tfvars"
