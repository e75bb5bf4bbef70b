"""Write a selection of records to JSONL, CSV or Parquet, in the dataset schema.

The files are the ones `explorer.data.load_records` (and so the training script) reads back: the
four schema columns first, then any extra columns, no row numbers. Files go to a fresh temporary
folder under a name made here; nothing a browser sends becomes part of a path.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import threading
from collections import deque
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

FORMATS = ("jsonl", "csv", "parquet")
_CHUNK = 10_000
# Old export folders are removed once this many newer ones exist: Gradio has copied each file
# to its own cache by then, and a long-running Space must not fill its disk.
_KEEP = 16
_recent: deque[Path] = deque()
_recent_lock = threading.Lock()


class ExportError(ValueError):
    """An export that cannot be made (unknown format)."""


def check_format(file_format) -> str:
    name = str(file_format or "").strip().lower().lstrip(".")
    if name not in FORMATS:
        raise ExportError(f"Unknown export format {file_format!r}: use one of {', '.join(FORMATS)}.")
    return name


def export_table(table: pa.Table, file_format: str, progress=None) -> str:
    """Write `table` as `file_format` into a new temporary folder; returns the file's path.

    `progress`, if given, is called as progress(rows_written, total_rows) while writing.
    """
    file_format = check_format(file_format)
    folder = Path(tempfile.mkdtemp(prefix="dolly-export-"))
    path = folder / f"dolly-{table.num_rows}-rows.{file_format}"
    total = table.num_rows
    report = progress or (lambda done, total: None)
    report(0, total)
    if file_format == "parquet":
        with pq.ParquetWriter(path, table.schema) as writer:
            for start in range(0, max(total, 1), _CHUNK):
                writer.write_table(table.slice(start, _CHUNK))
                report(min(start + _CHUNK, total), total)
    elif file_format == "csv":
        with pa_csv.CSVWriter(path, table.schema) as writer:
            for start in range(0, max(total, 1), _CHUNK):  # an empty export still gets its header
                writer.write_table(table.slice(start, _CHUNK))
                report(min(start + _CHUNK, total), total)
    else:
        with path.open("w", encoding="utf-8") as out:
            for start in range(0, total, _CHUNK):
                for record in table.slice(start, _CHUNK).to_pylist():
                    out.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
                report(min(start + _CHUNK, total), total)
    _forget_old(folder)
    return str(path)


def _forget_old(folder: Path) -> None:
    with _recent_lock:
        _recent.append(folder)
        while len(_recent) > _KEEP:
            shutil.rmtree(_recent.popleft(), ignore_errors=True)
