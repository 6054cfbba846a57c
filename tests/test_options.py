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
    with pytest.raises(ValueError, match="kind 'float'"):
        Option("x", "help", "float")


def test_the_table_has_one_row_per_variable():
    rows = settings_table().splitlines()[2:]
    assert [row.split("`")[1] for row in rows] == list(ENV_VARS)
    assert "| `K_MAX` | `--k-max` | `10` |" in settings_table()
    assert "| `FEATURES_SOURCE` | `--features` | required (CLI: the built-in sample) |" in (
        settings_table()
    )
