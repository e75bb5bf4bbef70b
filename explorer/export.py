"""Write a selection of records to JSONL, CSV or Parquet, in the dataset schema, and keep the files tidy.

The files are the ones `dolly.data.load_records` (and so the training script) reads back: the
four schema columns first, then any extra columns, no row numbers. Names are made here; nothing a
browser sends becomes part of a path.

`ExportStore` is where a running app keeps its exports: one folder per app under a root the caller
picks (the app passes Gradio's cache, so Gradio serves each file where it lies instead of storing
a second copy). The same rows in the same format are one file, however often (or however many
users at once) ask for them: its folder is named for the content (`content_key`), so a repeat is
served the stored file. A file is written under a `.partial` name and renamed once complete;
exports older than `max_age` go at the next export; the exports together hold at most `max_bytes`
(the oldest go first); closing the store removes them all; and at start-up the folders of apps
that are no longer running (a crash, a kill -9) are emptied. Only names this module makes are ever
removed.
"""
from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

try:  # a running app holds a lock on its folder; a folder whose lock is free belongs to no running app
    import fcntl
except ImportError:  # Windows: no flock, so only the age rule tidies up
    fcntl = None

FORMATS = ("jsonl", "csv", "parquet")
_CHUNK = 10_000
DEFAULT_MAX_AGE_S = 3600.0  # an export stays downloadable at least this long (unless max_bytes is reached)
# The most one app's exports hold on disk together: dolly-15k whole is about 13 MB as JSONL or CSV,
# so this keeps dozens of full exports while bounding what requests can make the server store.
MAX_BYTES = 512 * 1024 * 1024
_APP_FOLDER = re.compile(r"app-[0-9a-f]{32}")
_EXPORT_FOLDER = re.compile(r"export-[0-9a-f]{32}")
_EXPORT_FILE = re.compile(r"dolly-\d+-rows\.(jsonl|csv|parquet)(\.partial)?")
_LOCK = ".lock"


def content_key(table: pa.Table, file_format: str) -> str:
    """32 hex digits naming what an export of `table` as `file_format` holds (its schema and every
    value): the same selection of the same data, in the same format, gives the same key; other rows,
    another order or other data give another."""
    digest = hashlib.sha256(file_format.encode())
    digest.update(table.schema.serialize())
    for batch in table.to_batches(max_chunksize=_CHUNK):
        digest.update(batch.serialize())
    return digest.hexdigest()[:32]


class ExportError(ValueError):
    """An export that cannot be made (unknown format)."""


def check_format(file_format) -> str:
    """`file_format` ("jsonl", "CSV", ".parquet", ...) as one of FORMATS, or an ExportError naming them."""
    name = file_format.strip().lower().lstrip(".") if isinstance(file_format, str) else None
    if name not in FORMATS:
        raise ExportError(f"Unknown export format {file_format!r:.80} (file_format): use one of {', '.join(FORMATS)}.")
    return name


def write_table(table: pa.Table, path: Path, file_format: str, progress=None) -> None:
    """Write `table` to `path` as `file_format`; `progress(rows_written, total_rows)` while writing."""
    total = table.num_rows
    report = progress or (lambda done, total: None)
    report(0, total)
    if file_format == "parquet":
        with pq.ParquetWriter(path, table.schema) as writer:
            for start in range(0, max(total, 1), _CHUNK):
                writer.write_table(table.slice(start, _CHUNK))
                report(min(start + _CHUNK, total), total)
    elif file_format == "csv":
        # A UTF-8 byte order mark first: Excel reads a CSV without one in the PC's legacy code page
        # ("zÃ¼rich"); with it, "zürich". pandas, Arrow and this project's loader skip it.
        with path.open("wb") as out:
            out.write(codecs.BOM_UTF8)  # before the writer, which writes the header as it opens
            with pa_csv.CSVWriter(out, table.schema) as writer:
                for start in range(0, max(total, 1), _CHUNK):  # an empty export still gets its header
                    writer.write_table(table.slice(start, _CHUNK))
                    report(min(start + _CHUNK, total), total)
    else:
        with path.open("w", encoding="utf-8") as out:
            for start in range(0, total, _CHUNK):
                for record in table.slice(start, _CHUNK).to_pylist():
                    out.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
                report(min(start + _CHUNK, total), total)


class ExportStore:
    """The exports of one running app: `<root>/app-<id>/export-<id>/dolly-<N>-rows.<format>`."""

    def __init__(self, root: str | Path, max_age: float = DEFAULT_MAX_AGE_S, max_bytes: int | None = None):
        self.root = Path(root)
        self.max_age = float(max_age)
        self.max_bytes = MAX_BYTES if max_bytes is None else int(max_bytes)
        self.root.mkdir(parents=True, exist_ok=True)
        self.removed_at_start = self._remove_leftovers()
        # Made under a name the sweep ignores, locked, then renamed: another app starting at the
        # same moment never sees this folder unlocked.
        staging = Path(tempfile.mkdtemp(prefix=".new-", dir=self.root))
        self._lock_file = (staging / _LOCK).open("w")
        if fcntl is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.folder = self.root / f"app-{uuid.uuid4().hex}"
        staging.rename(self.folder)
        self._sweep_lock = threading.Lock()  # held while files are looked at, made or removed
        # Exports of the same content wait for each other (the first writes, the rest reuse its file);
        # a fixed set of locks, picked by key, so that any number of distinct exports costs no memory.
        self._key_locks = [threading.Lock() for _ in range(64)]

    def export(self, table: pa.Table, file_format: str, progress=None) -> str:
        """`table` as a `file_format` file: the stored one when the same content was exported before
        (and is still kept), else a new one; returns the file's path."""
        file_format = check_format(file_format)
        self.sweep()
        key = content_key(table, file_format)
        folder = self.folder / f"export-{key}"
        path = folder / f"dolly-{table.num_rows}-rows.{file_format}"
        partial = path.with_name(path.name + ".partial")
        with self._key_locks[int(key[:8], 16) % len(self._key_locks)]:
            with self._sweep_lock:
                reuse = path.is_file()
                if reuse:
                    os.utime(path)  # asked for again: it stays another max_age, and is the newest for max_bytes
                else:  # the folder gets its file at once, so that no sweep removes it as empty meanwhile
                    folder.mkdir(exist_ok=True)
                    partial.touch()
            if reuse:
                if progress:
                    progress(table.num_rows, table.num_rows)
            else:
                try:
                    write_table(table, partial, file_format, progress)
                    os.replace(partial, path)
                except BaseException:
                    with self._sweep_lock:
                        partial.unlink(missing_ok=True)
                        _remove_empty(folder)
                    raise
        self.trim(keep=path)
        return str(path)

    def trim(self, keep: Path | None = None) -> int:
        """Remove the oldest finished exports until together they hold at most max_bytes (never `keep`,
        the one just asked for, even alone over the limit); returns how many files went."""
        with self._sweep_lock:
            files = []
            for file in _export_files(self.folder):
                if not file.name.endswith(".partial"):
                    try:
                        info = file.stat()
                    except FileNotFoundError:
                        continue
                    files.append((info.st_mtime, info.st_size, file))
            total = sum(size for _, size, _ in files)
            removed = 0
            for _, size, file in sorted(files, key=lambda entry: entry[0]):
                if total <= self.max_bytes:
                    break
                if file == keep:
                    continue
                file.unlink(missing_ok=True)
                _remove_empty(file.parent)
                total -= size
                removed += 1
            return removed


    def sweep(self, now: float | None = None) -> int:
        """Remove this app's exports older than max_age; returns how many files went."""
        cutoff = (time.time() if now is None else now) - self.max_age
        with self._sweep_lock:
            return _remove_exports(self.folder, lambda file: file.stat().st_mtime < cutoff)

    def _remove_leftovers(self) -> int:
        """Empty the folders of apps that are not running any more; returns how many files went."""
        removed = 0
        for folder in self.root.iterdir():
            if not (_APP_FOLDER.fullmatch(folder.name) and folder.is_dir() and not folder.is_symlink()):
                continue
            lock = folder / _LOCK
            try:
                handle = lock.open("a")
            except OSError:
                continue
            with handle:
                if fcntl is not None:
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except OSError:
                        continue  # its app is running
                    removed += _remove_exports(folder, lambda file: True)
                else:
                    cutoff = time.time() - self.max_age
                    removed += _remove_exports(folder, lambda file: file.stat().st_mtime < cutoff)
                if not any(entry.name != _LOCK for entry in folder.iterdir()):
                    lock.unlink(missing_ok=True)
            _remove_empty(folder)
        return removed

    def close(self) -> None:
        """Remove every export of this app and its folder (an app that shuts down cleanly)."""
        with self._sweep_lock:
            _remove_exports(self.folder, lambda file: True)
            if not any(entry.name != _LOCK for entry in self.folder.iterdir()):
                (self.folder / _LOCK).unlink(missing_ok=True)
            self._lock_file.close()
            _remove_empty(self.folder)


def _export_folders(app_folder: Path) -> list[Path]:
    """The export folders in `app_folder` (names this module makes, no links)."""
    try:
        entries = list(app_folder.iterdir())
    except FileNotFoundError:
        return []
    return [entry for entry in entries
            if _EXPORT_FOLDER.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink()]


def _export_files(app_folder: Path) -> list[Path]:
    """The export files (finished or .partial) in `app_folder`: only names this module makes."""
    files = []
    for folder in _export_folders(app_folder):
        try:
            entries = list(folder.iterdir())
        except FileNotFoundError:
            continue
        files += [entry for entry in entries
                  if _EXPORT_FILE.fullmatch(entry.name) and entry.is_file() and not entry.is_symlink()]
    return files


def _remove_exports(app_folder: Path, doomed) -> int:
    """Remove the export files in `app_folder` for which doomed(path) is true, and their emptied
    folders. Only names this module makes are touched: anything else put there stays."""
    removed = 0
    for file in _export_files(app_folder):
        try:
            if doomed(file):
                file.unlink()
                removed += 1
        except FileNotFoundError:
            pass  # removed meanwhile (Gradio's own cache sweep, or another sweep)
    for folder in _export_folders(app_folder):
        _remove_empty(folder)
    return removed


def _remove_empty(folder: Path) -> None:
    try:
        folder.rmdir()  # only if empty: never a tree
    except OSError:
        pass
