"""The repository stands alone: a fresh clone with nothing beside it runs and passes its tests."""

import re
import subprocess

from tests.helpers import REAL_BOUNDARIES, REAL_FEATURES, REPO

# A path that climbs out of the repository to a sibling folder (../shared, parent / "shared").
OUTSIDE = re.compile(r"\.\./shared|parents?\b[^\n]{0,40}[\"']shared[\"']")


def _tracked() -> list[str]:
    listing = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    )
    return listing.stdout.split()


def test_no_tracked_file_reads_a_folder_beside_the_repository():
    offenders = []
    for name in _tracked():
        path = REPO / name
        if name.startswith("data/") or path.suffix in {".png", ".geojson", ".csv"}:
            continue
        if name in {".ci/run", "tests/test_repository.py"}:
            continue
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        offenders += [f"{name}: {m.group(0)}" for m in OUTSIDE.finditer(text)]
    assert offenders == []


def test_the_checker_sees_a_path_beside_the_repository():
    assert OUTSIDE.search('REPO.parent / "shared" / "data"')
    assert OUTSIDE.search("see ../shared/DESIGN.md")
    assert not OUTSIDE.search('"shared by every layer"')


def test_the_real_data_ships_with_its_provenance():
    assert REAL_FEATURES.is_file() and REAL_BOUNDARIES.is_file()
    assert (REAL_FEATURES.parent / "PROVENANCE.md").is_file()
    assert REAL_FEATURES.read_text().count("\n") == 280  # header + 279 neighborhoods
