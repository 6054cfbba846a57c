"""Local files: the same layout as Cloud Storage, in folders, so the CLI and the function
share one code path."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd

from clustering.errors import InputError
from clustering.naming import claim_name

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
        raise InputError(f"{path} is empty: give a file with a header row and one row per "
                         "neighborhood")  # fmt: skip
    return parse_table(file.read_bytes() if kind == "csv" else file, kind, path)


def read_bytes(path: str) -> bytes:
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{path}: no such file: check the path")
    return file.read_bytes()


def parse_table(content, kind: str, where: str) -> pd.DataFrame:
    """Parse CSV bytes or a Parquet file/bytes into a DataFrame (shared with Cloud Storage)."""
    import io

    try:
        if kind == "csv":
            # Only empty cells are blank: "NA" or "null" in a column is text, reported as such.
            return pd.read_csv(io.BytesIO(content), keep_default_na=False, na_values=[""],
                               skipinitialspace=True)  # fmt: skip
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


def table_bytes(frame: pd.DataFrame, name: str) -> bytes:
    """The clusters table encoded for a .csv or .parquet destination named `name`."""
    suffix = Path(name).suffix.lower()
    if suffix not in READERS:
        raise InputError(f"{name}: the clusters table must be a .csv or .parquet path")
    if suffix == ".csv":
        return frame.to_csv(index=False).encode()
    return frame.to_parquet(index=False)


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


def append_table(path: str, frame: pd.DataFrame) -> None:
    """Append rows to a local .csv (header written when the file is new) or .jsonl file."""
    file = Path(path)
    file.parent.mkdir(parents=True, exist_ok=True)
    if file.suffix.lower() == ".jsonl":
        text = frame.to_json(orient="records", lines=True, date_format="iso")
        with file.open("a", encoding="utf-8") as out:
            out.write(text if text.endswith("\n") or not text else text + "\n")
        return
    new = not file.exists() or file.stat().st_size == 0
    with file.open("a", encoding="utf-8", newline="") as out:
        frame.to_csv(out, index=False, header=new)


class LocalStore:
    """runs/<run_id>/, latest/ and claims/ under a local folder."""

    def __init__(self, root: str) -> None:
        self.root = Path(root)

    def describe(self, path: str = "") -> str:
        return str(self.root / path)

    def write_run(self, run_id: str, files: dict[str, bytes]) -> None:
        folder = self.root / "runs" / run_id
        folder.mkdir(parents=True, exist_ok=False)
        for name, content in files.items():
            (folder / name).write_bytes(content)

    def promote(self, run_id: str, files: dict[str, bytes]) -> None:
        """Fill a hidden folder, then swap it in with two renames, so readers see the old
        latest/ or the new one, never a mixture."""
        staging = self.root / f".latest-{run_id}"
        shutil.copytree(self.root / "runs" / run_id, staging)
        latest = self.root / "latest"
        retired = self.root / f".retired-{run_id}"
        if latest.exists():
            latest.rename(retired)
        staging.rename(latest)
        shutil.rmtree(retired, ignore_errors=True)

    def read_latest(self, name: str) -> bytes | None:
        try:
            return (self.root / "latest" / name).read_bytes()
        except FileNotFoundError:
            return None

    def _claim(self, key: str) -> Path:
        return self.root / "claims" / claim_name(key)

    def create_claim(self, key: str, content: bytes) -> bool:
        path = self._claim(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with path.open("xb") as claim:
                claim.write(content)
        except FileExistsError:
            return False
        return True

    def read_claim(self, key: str) -> tuple[bytes, object] | None:
        path = self._claim(key)
        try:
            return path.read_bytes(), _version(path)
        except FileNotFoundError:
            return None

    def replace_claim(self, key: str, content: bytes, token: object | None) -> bool:
        """Overwrite the claim; with a token, only if it was not modified since. Local runs
        have one process, so the check and the rename need no lock."""
        path = self._claim(key)
        if token is not None and (not path.exists() or _version(path) != token):
            return False
        partial = path.with_name(f".{path.name}.partial")
        partial.write_bytes(content)
        os.replace(partial, path)
        return True

    def release(self, key: str) -> None:
        self._claim(key).unlink(missing_ok=True)


def _version(path: Path) -> tuple[int, int]:
    """Changes with every replacement: a replaced claim is a new file (a new inode), even
    within one tick of the file system's clock."""
    status = path.stat()
    return status.st_ino, status.st_mtime_ns
