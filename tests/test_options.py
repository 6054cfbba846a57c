"""The registry of settings: one entry per setting, consistent with the settings objects."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from clustering.options import DEFAULTS, OPTIONS, Option, env_vars, settings_table
from clustering.settings import ENV_VARS, AnalysisSettings, JobSettings

ROOT = Path(__file__).resolve().parents[1]


def test_env_vars_are_the_registrys():
    assert env_vars() == ENV_VARS
    assert len(set(ENV_VARS)) == len(ENV_VARS)
    flags = [o.flag for o in OPTIONS if o.flag]
    assert len(set(flags)) == len(flags)


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.field)
def test_each_option_is_a_field_with_the_same_default(option):
    owner = AnalysisSettings if option.analysis else JobSettings
    fields = {f.name: f for f in dataclasses.fields(owner)}
    assert option.field in fields, f"{owner.__name__} has no field {option.field}"
    field = fields[option.field]
    default = field.default_factory() if callable(field.default_factory) else field.default
    assert option.default == default, option.field
    assert option.help and "\n" not in option.help and not option.help.endswith(".")


def test_every_field_has_an_option():
    registered = {o.field for o in OPTIONS}
    analysis = {f.name for f in dataclasses.fields(AnalysisSettings)}
    job = {f.name for f in dataclasses.fields(JobSettings)} - {"analysis"}
    assert analysis | job == registered


def test_the_defaults_file_holds_the_analytic_defaults():
    raw = json.loads((ROOT / "clustering" / "defaults.json").read_text(encoding="utf-8"))
    assert raw == dict(DEFAULTS)
    assert len(raw["exclude_neighborhoods"]) == 13 and len(raw["clustering_features"]) == 15


def test_a_bad_kind_is_refused():
    with pytest.raises(ValueError, match="kind 'bool'"):
        Option("x", "help", "bool")


def test_the_table_has_one_row_per_variable():
    rows = settings_table().splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == list(ENV_VARS)
    assert "| `K_MAX` | `--k-max` | `10` |" in settings_table()
    assert "| `FEATURES_SOURCE` | `--features` | required (CLI: the built-in sample) |" in (
        settings_table()
    )


def test_a_float_option_reads_numbers_from_the_environment():
    # For settings such as a ratio; none is registered yet, so the reader is driven directly.
    from clustering import InputError
    from clustering.settings import _from_env

    ratio = Option("ratio", "a share", "float", "RATIO", "--ratio", 0.5)
    assert ratio.type is float
    assert _from_env({"RATIO": " 0.25 "}, ratio) == 0.25
    assert _from_env({}, ratio) == 0.5
    with pytest.raises(InputError, match=r"^RATIO='half' is not a number: set it to a number"):
        _from_env({"RATIO": "half"}, ratio)


def test_markdown_special_characters_are_escaped_in_the_table():
    assert "runs/&lt;run_id>/" in settings_table()
