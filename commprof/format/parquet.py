"""A run's frames as Parquet files (``commprof export RUN --parquet DIR``; docs/data.md).

Layout of ``DIR``::

    calls/rank=0/part-0.parquet   one directory per rank (hive partitioning: ``rank`` is the
    calls/rank=1/part-0.parquet   directory name, not a column of the files)
    waits.parquet steps.parquet ranks.parquet ops.parquet links.parquet gpu_kernels.parquet
    hang.parquet
    export.json                   schema version, run path, notes, whether the run was complete

Every file carries the schema version in its metadata (key ``commprof.schema``) and its frame's
name (``commprof.frame``).  pyarrow is imported when a file is written or read, not before.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Callable

import pandas as pd

from commprof.errors import CommprofError, UsageError

SCHEMA_KEY = b"commprof.schema"
FRAME_KEY = b"commprof.frame"
PARTITIONED = {"calls": "rank"}  # frame -> the column its files are split by
INDEX_FILE = "export.json"


class ExportError(CommprofError):
    """An export that cannot be written."""


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ExportError("pyarrow is not installed: `pip install pyarrow` (needed for Parquet)") from exc
    return pa, pq


def prepare_dir(out: Path, force: bool) -> None:
    """Create ``out`` (or check it is empty; ``force``: clear what an earlier export wrote)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"{out}: exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise UsageError(f"{out}: exists and is not empty (use --force to overwrite an export)")
        for p in out.iterdir():
            if p.is_dir() and p.name in PARTITIONED:
                shutil.rmtree(p)
            elif p.suffix == ".parquet" or p.name == INDEX_FILE:
                p.unlink()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".commprof-write-check"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ExportError(f"{out}: cannot write: {exc.strerror or exc}") from exc


def _table(df: pd.DataFrame, name: str, schema: str):
    pa, _ = _pyarrow()
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta.update({SCHEMA_KEY: schema.encode(), FRAME_KEY: name.encode()})
    return table.replace_schema_metadata(meta)


def _write(table, path: Path) -> None:
    _, pq = _pyarrow()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
    except OSError as exc:
        raise ExportError(f"{path}: cannot write: {exc.strerror or exc}") from exc


def write_frames(frames: list[tuple[str, Callable[[], pd.DataFrame]]], out: Path, schema: str,
                 info: Callable[[], dict], progress: bool = True) -> list[Path]:
    """Write each (name, build) frame under ``out`` (built one at a time), then the index with
    ``info()`` (called last: what reading the run found, damage included); returns the files."""
    written = []
    for name, build in frames:
        if progress:
            print(f"commprof: export: {name} ...", file=sys.stderr, flush=True)
        df = build()
        key = PARTITIONED.get(name)
        if key is None:
            written.append(out / f"{name}.parquet")
            _write(_table(df, name, schema), written[-1])
            continue
        parts = sorted(df[key].unique()) if len(df) else []
        for value in parts:
            part = df[df[key] == value].drop(columns=[key])
            written.append(out / name / f"{key}={int(value)}" / "part-0.parquet")
            _write(_table(part, name, schema), written[-1])
        if not parts:  # no rows: one file with the columns, so the frame is still there
            written.append(out / name / "empty.parquet")
            _write(_table(df.drop(columns=[key]), name, schema), written[-1])
    index = dict(info(), schema=schema, frames=[n for n, _ in frames])
    try:
        (out / INDEX_FILE).write_text(json.dumps(index, indent=1, default=str) + "\n")
    except OSError as exc:
        raise ExportError(f"{out / INDEX_FILE}: cannot write: {exc.strerror or exc}") from exc
    return written


def file_schema(path: Path) -> str | None:
    """The schema version in one exported file's metadata (None if it has none)."""
    _, pq = _pyarrow()
    meta = pq.read_schema(path).metadata or {}
    value = meta.get(SCHEMA_KEY)
    return value.decode() if value is not None else None


def read_frame(out: Path, name: str, dtypes: dict[str, str] | None = None) -> pd.DataFrame:
    """One exported frame back as pandas (``calls``: every rank's files, ``rank`` first again and
    int64).  ``dtypes`` (``commprof.analysis.outcome.frames.COLUMNS[name]``): restore the frame's own
    dtypes where Parquet has none of its own (object strings, which pandas >= 3 reads as ``str``;
    categoricals of an empty frame)."""
    _, pq = _pyarrow()
    key = PARTITIONED.get(name)
    if key is None:
        return _restore(pq.read_table(out / f"{name}.parquet").to_pandas(), dtypes)
    frames = []
    for path in sorted((out / name).glob(f"{key}=*/*.parquet"),
                       key=lambda p: int(p.parent.name.split("=", 1)[1])):
        df = pq.read_table(path).to_pandas()
        df.insert(0, key, int(path.parent.name.split("=", 1)[1]))
        frames.append(df)
    if not frames:
        df = pq.read_table(out / name / "empty.parquet").to_pandas()
        df.insert(0, key, pd.Series(dtype="int64"))
        return _restore(df, dtypes)
    cats = [c for c in frames[0] if isinstance(frames[0][c].dtype, pd.CategoricalDtype)]
    df = pd.concat(frames, ignore_index=True)
    for c in cats:  # concat of differing categories falls back to object: categorical again
        if not isinstance(df[c].dtype, pd.CategoricalDtype):
            df[c] = df[c].astype("category")
    return _restore(df, dtypes)


def _restore(df: pd.DataFrame, dtypes: dict[str, str] | None) -> pd.DataFrame:
    if not dtypes:
        return df
    for col, want in dtypes.items():
        if col not in df or str(df[col].dtype) == want:
            continue
        if want == "object":
            df[col] = df[col].astype(object).where(df[col].notna(), None)
        elif want == "category":
            df[col] = df[col].astype(object).astype("category")
        else:
            df[col] = df[col].astype(want)
    return df[[c for c in dtypes if c in df] + [c for c in df if c not in dtypes]]
