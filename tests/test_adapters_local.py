"""The local adapter's appends and latest/ reads (the artifact store's layout in folders)."""

import json

import pandas as pd

from clustering import adapters
from clustering.adapters.local import LocalStore


def moves(*names: str) -> pd.DataFrame:
    return pd.DataFrame(
        {"neighborhood": list(names), "sub_cluster": pd.array([1] * len(names), dtype="Int64")}
    )


def test_a_csv_transitions_table_gets_its_header_once(tmp_path):
    path = tmp_path / "tables" / "transitions.csv"
    adapters.append_transitions(str(path), moves("Abell"), schema=[])
    adapters.append_transitions(str(path), moves("Canton", "Dickeyville"), schema=[])
    back = pd.read_csv(path)
    assert back["neighborhood"].tolist() == ["Abell", "Canton", "Dickeyville"]
    assert path.read_text().count("neighborhood,sub_cluster") == 1


def test_a_jsonl_transitions_table_gets_one_line_per_row(tmp_path):
    path = tmp_path / "transitions.jsonl"
    adapters.append_transitions(str(path), moves("Abell"), schema=[])
    adapters.append_transitions(str(path), moves("Canton", "Dickeyville"), schema=[])
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["neighborhood"] for r in rows] == ["Abell", "Canton", "Dickeyville"]
    assert rows[0]["sub_cluster"] == 1


def test_a_run_file_is_read_from_its_folder(tmp_path):
    store = LocalStore(str(tmp_path / "out"))
    assert store.read_run_file("r1", "run.json") is None
    store.write_run("r1", {"run.json": b"{}"})
    assert store.read_run_file("r1", "run.json") == b"{}"
    assert store.read_run_file("r1", "missing.csv") is None
