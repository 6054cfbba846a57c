"""Local files: the same layout as Cloud Storage, in folders, so the CLI and the function
share one code path."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from clustering import InputError
from clustering.naming import MANIFEST, claim_name
from clustering.settings import MAX_BOUNDARIES_BYTES, MAX_FEATURES_BYTES

if TYPE_CHECKING:
    import pandas as pd

# pandas (and clustering.table, which needs it) load inside the functions that read or write
# tables: the function's store (claims, pointer) answers a skipped delivery without them.

READERS = {".csv": "csv", ".parquet": "parquet"}


def read_table(path: str) -> pd.DataFrame:
    """Read a .csv or .parquet features file; every problem is an InputError."""
    file = Path(path)
    kind = READERS.get(file.suffix.lower())
    if kind is None:
        raise InputError(
            f"{path}: unknown format {file.suffix or '(no extension)'!r}: "
            "give a .csv or .parquet file"
        )
    if not file.exists():
        raise InputError(f"{path}: no such file: check the path given to --features")
    if file.is_dir():
        raise InputError(f"{path} is a folder: give a .csv or .parquet file")
    if file.stat().st_size == 0:
        raise InputError(f"{path} is empty: give a file with a header row and one row per place")
    _check_size(file, MAX_FEATURES_BYTES)
    return parse_table(file.read_bytes() if kind == "csv" else file, kind, path)


def read_bytes(path: str, max_bytes: int = MAX_BOUNDARIES_BYTES) -> bytes:
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{path}: no such file: check the path")
    _check_size(file, max_bytes)
    return file.read_bytes()


def _check_size(file: Path, max_bytes: int) -> None:
    """Refuse a file above its size limit (docs/configuration.md, Limits) before reading it."""
    size = file.stat().st_size
    if size > max_bytes:
        raise InputError(
            f"{file} is {size:,} bytes, more than the {max_bytes:,} this job reads "
            "(see docs/configuration.md, Limits): split or shrink the file"
        )


def parse_table(content, kind: str, where: str) -> pd.DataFrame:
    """Parse CSV bytes or a Parquet file/bytes into a DataFrame (shared with Cloud Storage)."""
    import io

    import pandas as pd

    try:
        if kind == "csv":
            # Only empty cells are blank: "NA" or "null" in a column is text, reported as such.
            frame = pd.read_csv(
                io.BytesIO(content),
                keep_default_na=False,
                na_values=[""],
                skipinitialspace=True,
                dtype_backend="numpy_nullable",
                **csv_dialect(content),
            )
            return _integers_kept(frame)
        source = io.BytesIO(content) if isinstance(content, bytes) else content
        return pd.read_parquet(source)
    except pd.errors.EmptyDataError:
        raise InputError(
            f"{where} has no header row: the first line must name the columns"
        ) from None
    except (UnicodeDecodeError, pd.errors.ParserError, ValueError, OSError) as error:
        detail = str(error).splitlines()[0][:160] if str(error) else type(error).__name__
        raise InputError(
            f"{where} cannot be read as {kind.upper()} ({detail}): check that the file is a "
            f"valid {kind} export"
        ) from None


def _integers_kept(frame: pd.DataFrame) -> pd.DataFrame:
    """A CSV's columns as numpy types, except whole-number columns: those stay integers even
    with blanks (pandas would widen them to floats: 21323 written back as 21323.0), as
    BigQuery INTEGER and Parquet integer columns arrive."""
    import numpy as np
    import pandas as pd

    types = pd.api.types
    kept = {}
    for column in frame.columns:
        values = frame[column]
        if types.is_integer_dtype(values):
            kept[column] = values.astype("Int64" if values.isna().any() else "int64")
        elif types.is_bool_dtype(values):
            kept[column] = values.astype(object) if values.isna().any() else values.astype(bool)
        elif types.is_float_dtype(values):
            kept[column] = values.astype("float64")
        else:
            kept[column] = values.astype(object).where(values.notna(), np.nan)
    return frame.assign(**kept) if kept else frame


# Separators a spreadsheet's "CSV" export may use instead of commas, by the locale's habits.
OTHER_SEPARATORS = {";": "semicolon", "\t": "tab"}


def csv_dialect(content: bytes) -> dict[str, str]:
    """read_csv options for a header without commas but with semicolons or tabs.

    Spreadsheets in locales whose decimal mark is a comma export "CSV" with semicolons, and
    their numbers with decimal commas, so those are read too ("0,5" is 0.5).
    """
    header = content.split(b"\n", 1)[0].decode("utf-8", errors="replace")
    if "," in header:
        return {}
    counts = {sep: header.count(sep) for sep in OTHER_SEPARATORS}
    sep = max(counts, key=counts.get)
    if not counts[sep]:
        return {}
    return {"sep": sep, "decimal": ","} if sep == ";" else {"sep": sep}


def table_bytes(frame: pd.DataFrame, name: str) -> bytes:
    """The clusters table encoded for a .csv or .parquet destination named `name`."""
    suffix = Path(name).suffix.lower()
    if suffix not in READERS:
        raise InputError(f"{name}: the clusters table must be a .csv or .parquet path")
    if suffix == ".csv":
        from clustering.table import people_csv

        return people_csv(frame)
    return frame.to_parquet(index=False)


def run_id_of(content: bytes, name: str) -> str | None:
    """The run_id of a clusters table file's first row (.csv or .parquet), None if none."""
    import io

    import pandas as pd

    from clustering.table import read_people_csv

    try:
        if Path(name).suffix.lower() == ".parquet":
            frame = pd.read_parquet(io.BytesIO(content), columns=["run_id"])
        else:
            frame = read_people_csv(content, usecols=lambda c: c == "run_id", nrows=1)
    except (ValueError, KeyError, OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    values = frame["run_id"].dropna() if "run_id" in frame else ()
    return str(values.iloc[0]) if len(values) else None


def replace_table(path: str, frame: pd.DataFrame) -> None:
    """Write the clusters table atomically: a temporary file renamed over the old one."""
    content = table_bytes(frame, path)
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    partial = file.with_name(f".{file.name}.partial")
    partial.write_bytes(content)
    os.replace(partial, file)


def append_row(path: str, row: dict) -> None:
    """Append one JSON line to a local run history."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    with file.open("a", encoding="utf-8") as history:
        history.write(json.dumps(row, default=str) + "\n")


def holds_run(path: str, run_id: str) -> bool:
    """Whether a local .jsonl or .csv table has a row whose run_id is `run_id`."""
    file = Path(path)
    if not file.is_file() or file.stat().st_size == 0:
        return False
    if file.suffix.lower() == ".jsonl":
        lines = file.read_text(encoding="utf-8").splitlines()
        return any(json.loads(line).get("run_id") == run_id for line in lines if line.strip())
    import pandas as pd

    frame = pd.read_csv(file, usecols=lambda c: c == "run_id", dtype=str)
    return bool((frame.get("run_id", pd.Series(dtype=str)) == run_id).any())


def append_table(path: str, frame: pd.DataFrame) -> None:
    """Append rows to a local .csv (header written when the file is new) or .jsonl file."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    if file.suffix.lower() == ".jsonl":
        text = frame.to_json(orient="records", lines=True, date_format="iso")
        with file.open("a", encoding="utf-8") as out:
            out.write(text if text.endswith("\n") or not text else text + "\n")
        return
    from clustering.table import people_csv

    new = not file.exists() or file.stat().st_size == 0
    with file.open("ab") as out:
        out.write(people_csv(frame, header=new))


class LocalStore:
    """runs/<run_id>/, latest/ and claims/ under a local folder.

    latest/ is a full copy of the current run, swapped in with renames so readers see one run
    or the other; its run.json is the pointer the fencing compares. Compare-and-swap steps
    hold an exclusive lock on the folder, so threads and processes on one machine race
    safely, as they do on Cloud Storage's preconditions.
    """

    def __init__(self, root: str) -> None:
        self.root = Path(root)

    def describe(self, path: str = "") -> str:
        return str(self.root / path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        # An exclusive lock on the folder itself: no lock file appears among the outputs.
        self.root.mkdir(parents=True, exist_ok=True)
        folder = os.open(self.root, os.O_RDONLY)
        try:
            fcntl.flock(folder, fcntl.LOCK_EX)
            yield
        finally:
            os.close(folder)  # closing the descriptor releases the lock

    def write_run(self, run_id: str, files: dict[str, bytes]) -> None:
        folder = self.root / "runs" / run_id
        folder.mkdir(parents=True, exist_ok=False)
        for name, content in files.items():
            (folder / name).write_bytes(content)

    def read_pointer(self) -> tuple[bytes | None, object]:
        """latest/run.json and its version (0 when there is none)."""
        path = self.root / "latest" / MANIFEST
        try:
            return path.read_bytes(), _version(path)
        except FileNotFoundError:
            return None, 0

    def switch_latest(self, run_id: str, files: dict[str, bytes], token: object) -> bool:
        """Fill a hidden folder, then swap it in with two renames, so readers see the old
        latest/ or the new one, never a mixture; False (nothing changed) when latest/ is no
        longer the version `token` that this run read."""
        staging = self.root / f".latest-{run_id}"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(self.root / "runs" / run_id, staging)
        latest = self.root / "latest"
        retired = self.root / f".retired-{run_id}"
        with self._locked():
            if self.read_pointer()[1] != token:
                shutil.rmtree(staging, ignore_errors=True)
                return False
            if latest.exists():
                latest.rename(retired)
            staging.rename(latest)
        shutil.rmtree(retired, ignore_errors=True)
        return True

    def read_run_file(self, run_id: str, name: str) -> bytes | None:
        try:
            return (self.root / "runs" / run_id / name).read_bytes()
        except FileNotFoundError:
            return None

    def read_latest_file(self, name: str) -> bytes | None:
        try:
            return (self.root / "latest" / name).read_bytes()
        except FileNotFoundError:
            return None

    def _claim(self, key: str) -> Path:
        return self.root / "claims" / claim_name(key)

    def create_claim(self, key: str, content: bytes) -> object | None:
        """Create the claim exclusively; its version (the fencing token), or None."""
        path = self._claim(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside, then hard-linked into place: the link fails if the claim exists, and a
        # reader never meets a claim whose content is not written yet (an empty claim would
        # read as unreadable, and racing deliveries could both take it).
        partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
        partial.write_bytes(content)
        try:
            os.link(partial, path)
        except FileExistsError:
            return None
        finally:
            partial.unlink()
        return _version(path)

    def read_claim(self, key: str) -> tuple[bytes, object] | None:
        path = self._claim(key)
        with self._locked():
            try:
                return path.read_bytes(), _version(path)
            except FileNotFoundError:
                return None

    def replace_claim(self, key: str, content: bytes, token: object | None) -> object | None:
        """Overwrite the claim; with a token, only if it was not modified since. Returns the
        new version, or None when the claim changed meanwhile."""
        path = self._claim(key)
        with self._locked():
            if token is not None and (not path.exists() or _version(path) != token):
                return None
            partial = path.with_name(f".{path.name}.partial")
            partial.write_bytes(content)
            os.replace(partial, path)
            return _version(path)

    def release(self, key: str, token: object | None = None) -> bool:
        """Delete the claim (only if it is still version `token`, when given)."""
        path = self._claim(key)
        with self._locked():
            if token is not None and path.exists() and _version(path) != token:
                return False
            path.unlink(missing_ok=True)
            return True


def _version(path: Path) -> tuple[int, int]:
    """Changes with every replacement: a replaced claim is a new file (a new inode), even
    within one tick of the file system's clock."""
    status = path.stat()
    return status.st_ino, status.st_mtime_ns
