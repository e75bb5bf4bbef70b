"""The curation store: people's decisions about a dataset's records, kept in a real database.

A decision is one of Edit (new instruction / context / response / category), Exclude (with a reason) or
Accept (reviewed, keep as it stands). Each decision replaces the record's last one (an edited record that
is then excluded keeps its edits, should the exclusion be undone; an excluded record that is edited or
accepted is back in). Every change is kept as history; Undo reverts a record's last change still in force
(and is history itself), one step further back each time, down to the original record.

    store = open_store(None)                   # --curation-db / DOLLY_CURATION_DB, else default_location()
    key = dataset_key(frame)                   # the loaded dataset's identity (its records' content)
    state = store.state(key, row)              # RecordState; version 0, status "" when never touched
    state = store.edit(key, row, state.version, {"response": "..."}, author="ann")
    state = store.exclude(key, row, state.version, "duplicate of row 7", author="ann")
    state = store.accept(key, row, state.version, author="ann")
    state = store.undo(key, row, state.version, author="ann")
    states = store.edit_many(key, {row: (version, fields), ...}, author="ann")   # one transaction
    store.states(key) -> {row: RecordState}    # every record with a decision, one call
    store.counts(key) -> {"edited": n, "excluded": n, "accepted": n}
    store.history(key, row) -> [Change]        # oldest first: who, when, action, before, after
    curated(records, store.states(key), rows=None, column=False)   # edits applied, excluded removed
    store.close()

Saves are optimistic: each names the version of the record its editor opened. When someone saved the
record since, the save is refused with `Conflict`, whose message reads "Row 12 was changed by ann at
2026-12-06 12:01:33 UTC since you opened it (...)" and whose `current` is the newer RecordState (apply it
to the original record with `RecordState.apply` for the newer text). Saves of different records never
conflict. Nothing is ever overwritten silently. `edit_many` saves all or nothing. `author` is the --auth
user, or "anonymous" when empty.

Identity: a dataset is keyed by `dataset_key`, a SHA-256 over its records' four schema columns in row
order, and a record by its row number. So decisions apply whenever the same records are loaded again —
from the Hub, its cached snapshot or a local copy alike — and never to data whose rows differ, where a row
number would point at another record. (A Hub id + revision would not do: local files have no revision,
the loader does not pin one, and a moved or copied file is still the same data.)

Where (`open_store(location)`): a `postgresql://` (or `postgres://`) URL shares one store between app
replicas; anything else is a file path for SQLite. No location: the DOLLY_CURATION_DB environment variable,
else `default_location()`: `/data/open-dolly/curation.sqlite3` when `/data` is a writable folder (a Hugging
Face Space's persistent storage), else the app's own data folder, `$XDG_DATA_HOME/open-dolly/curation.sqlite3`
(`~/.local/share/open-dolly/curation.sqlite3` when XDG_DATA_HOME is unset; `%LOCALAPPDATA%\\open-dolly\\` on
Windows). Never beside the data, which may sit in a read-only cache.

Durability: a save returns once committed. SQLite runs in WAL mode with synchronous=FULL (the commit is on
disk before the call returns); PostgreSQL commits with its default synchronous_commit=on. A kill -9 right
after a save loses nothing that was confirmed. Beside an SQLite file live its `-wal` and `-shm` files and a
`.lock` file on which the writers of several processes queue; copy the store with the app stopped.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
import sys
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

try:  # SQLite writers of several processes queue on a lock file (see SQLiteStore._file_lock)
    import fcntl
except ImportError:  # Windows: SQLite's own busy wait only
    fcntl = None

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from dolly.data import REQUIRED_COLUMNS

ENV = "DOLLY_CURATION_DB"
SETTING = f"--curation-db (or {ENV})"
FILE_NAME = "curation.sqlite3"
APP_FOLDER = "open-dolly"
SPACE_DATA = Path("/data")
FIELDS = REQUIRED_COLUMNS  # what an edit may change: instruction, context, response, category
STATUSES = ("edited", "excluded", "accepted")
ANONYMOUS = "anonymous"
COLUMN = "curation"  # the optional column of a curated export: "edited", "accepted" or "" (see curated)
SCHEMA_VERSION = "1"


class CurationError(ValueError):
    """A curation request that cannot be done, with a message for the person who asked."""


class StoreError(CurationError):
    """The store's location (--curation-db / DOLLY_CURATION_DB) is wrong or cannot be reached."""


class NothingToUndo(CurationError):
    """Undo of a record with no change in force."""


@dataclass(frozen=True)
class RecordState:
    """A record's current decision. `fields` holds the edits in force (only the fields changed), also
    when the record is excluded or accepted; status "" is the original record (never touched, or undone)."""

    row: int
    version: int = 0
    status: str = ""
    fields: dict = field(default_factory=dict)
    reason: str = ""
    author: str = ""
    at: str = ""  # ISO 8601, UTC

    def apply(self, record: dict) -> dict:
        """`record` (the original) with this state's edits applied."""
        return {**record, **self.fields}

    def when(self) -> str:
        """`at` for people: "2026-12-06 12:01:33 UTC"."""
        return when(self.at)

    def describe(self) -> str:
        """E.g. "edited (response, category)", "excluded: duplicate of row 7", "accepted", "the original"."""
        if self.status == "excluded":
            return f"excluded: {self.reason}"
        if self.status == "edited":
            return f"edited ({', '.join(self.fields)})"
        if self.status == "accepted":
            return "accepted" + (f" with edits ({', '.join(self.fields)})" if self.fields else "")
        return "the original"

    def _payload(self) -> dict:
        return {"status": self.status, "fields": self.fields, "reason": self.reason}


@dataclass(frozen=True)
class Change:
    """One entry of a record's history: `before` and `after` are RecordStates."""

    version: int  # the record's version this change made
    action: str  # "edit", "exclude", "accept" or "undo"
    author: str
    at: str
    before: RecordState
    after: RecordState


class Conflict(CurationError):
    """A save against a version that is no longer the record's: someone saved it since it was opened.
    `current` is the newer state of the (first) record; `stale` every refused record's newer state."""

    def __init__(self, stale: list[RecordState], opened: dict[int, int], total: int = 1):
        self.stale, self.current, self._args = stale, stale[0], (stale, opened, total)
        first = stale[0]
        message = (f"Row {first.row} was changed by {first.author} at {first.when()} since you opened it "
                   f"(you opened version {opened[first.row]}; it is now version {first.version}, {first.describe()}).")
        if total > 1:
            others = ", ".join(f"row {s.row} by {s.author} at {s.when()}" for s in stale[1:4])
            more = f" and {len(stale) - 4} more" if len(stale) > 4 else ""
            message = (f"{len(stale)} of the {total} records were changed since you opened them: " + message
                       + (f" Also {others}{more}." if others else "") + " Nothing was saved.")
        super().__init__(message + " Reload to see the newer text, then make your change again.")

    def __reduce__(self):  # picklable (a process pool hands it back to its caller)
        return Conflict, self._args


def when(at: str) -> str:
    """An ISO time as "2026-12-06 12:01:33 UTC"."""
    try:
        return datetime.fromisoformat(at).astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return at


# -- identity ------------------------------------------------------------------------------------------
def dataset_key(records: pd.DataFrame | pa.Table) -> str:
    """The identity of a loaded dataset (load_records' frame, or a Table in dataset row order): 32 hex
    digits of SHA-256 over the number of rows and the four schema columns, value by value, in row order."""
    table = records if isinstance(records, pa.Table) else pa.Table.from_pandas(
        records[list(REQUIRED_COLUMNS)], preserve_index=False)
    digest = hashlib.sha256(f"open-dolly curation v1; rows={table.num_rows}".encode())
    for name in REQUIRED_COLUMNS:
        column = table[name].cast(pa.large_string())
        if column.null_count:
            column = pc.fill_null(column, "")
        # Every value's length, then its bytes: chunk by chunk (no copy of the text), the same digest
        # however the column is chunked.
        lengths, texts = hashlib.sha256(), hashlib.sha256()
        for chunk in column.chunks:
            offsets = np.frombuffer(chunk.buffers()[1], np.int64)[chunk.offset: chunk.offset + len(chunk) + 1]
            lengths.update(np.diff(offsets).astype("<i8").tobytes())
            data = chunk.buffers()[2]
            if data is not None and len(offsets) and offsets[-1] > offsets[0]:
                texts.update(memoryview(data)[int(offsets[0]): int(offsets[-1])])
        digest.update(name.encode() + b"\x00" + lengths.digest() + texts.digest())
    return digest.hexdigest()[:32]


# -- where ---------------------------------------------------------------------------------------------
def default_location(environ=None, space_data: Path = SPACE_DATA) -> Path:
    """Where the store lives when no location is given (see the module's docstring)."""
    environ = os.environ if environ is None else environ
    if space_data.is_dir() and os.access(space_data, os.W_OK | os.X_OK):
        return space_data / APP_FOLDER / FILE_NAME
    if sys.platform == "win32" and environ.get("LOCALAPPDATA"):
        return Path(environ["LOCALAPPDATA"]) / APP_FOLDER / FILE_NAME
    base = environ.get("XDG_DATA_HOME", "").strip()
    base = Path(base) if base and Path(base).is_absolute() else Path.home() / ".local" / "share"
    return base / APP_FOLDER / FILE_NAME


def resolve_location(location: str | os.PathLike | None, environ=None) -> str:
    """`location`, else DOLLY_CURATION_DB, else default_location(), as a string (a path or a URL)."""
    environ = os.environ if environ is None else environ
    for value in (location, environ.get(ENV)):
        if value is not None and str(value).strip():
            return str(value).strip()
    return str(default_location(environ))


def is_url(location: str) -> bool:
    return bool(re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", location))


def shown(location: str) -> str:
    """`location` fit to print: a URL's password replaced by ***."""
    if not is_url(location):
        return location
    parts = urlsplit(location)
    if parts.password is None:
        return location
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def open_store(location: str | os.PathLike | None = None, environ=None) -> "Store":
    """The store at `location` (a file path or a postgresql:// URL; None: DOLLY_CURATION_DB, else
    default_location()), its tables created when new. A StoreError naming the setting when the location
    is wrong: a folder, a file that is not an SQLite database, a place that cannot be written, another kind
    of URL, a PostgreSQL server that does not answer."""
    where = resolve_location(location, environ)
    if is_url(where):
        scheme = where.split("://", 1)[0].lower()
        if scheme not in ("postgresql", "postgres"):
            raise StoreError(f"{SETTING} takes a file path (SQLite) or a postgresql:// URL, got {shown(where)!r:.120}.")
        return PostgresStore(where)
    return SQLiteStore(Path(where).expanduser())


# -- the store -----------------------------------------------------------------------------------------
class Store:
    """What both databases share; a subclass says how to connect and how its SQL differs."""

    location: str
    _unique_errors: tuple = ()
    _lost_errors: tuple = ()
    _id_column = ""

    def __init__(self):
        self._idle: list = []  # a small pool: one connection per concurrent caller, reused
        self._all: list = []
        self._pool_lock = threading.Lock()
        self._closed = False
        self._ready = False
        with self._connection() as conn:
            self._create(conn)
        self._ready = True

    # Subclasses: _connect() -> connection; _begin(conn) -> context manager of one write transaction;
    # _q(sql) -> the SQL in the driver's placeholder style; _lock_row = " FOR UPDATE" or "".
    _lock_row = ""

    def _q(self, sql: str) -> str:
        return sql

    @contextlib.contextmanager
    def _connection(self):
        if self._closed:
            raise CurationError(f"The curation store at {shown(self.location)} is closed.")
        with self._pool_lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            try:
                conn = self._connect()
            except self._lost_errors as error:
                if not self._ready:
                    raise
                first = (str(error).strip().splitlines() or [type(error).__name__])[0]
                raise StoreError(f"The curation store at {shown(self.location)} did not answer ({first[:200]}). "
                                 "Try again; if it goes on, check the database.") from None
            with self._pool_lock:
                self._all.append(conn)
        try:
            yield conn
        except self._lost_errors as error:
            # The database went away (a PostgreSQL restart, a network cut, a lock held past the timeout): this
            # connection is dropped, the next call opens a new one. Retrying is safe: a save that did reach
            # the database before the cut is refused as stale, never applied twice.
            with self._pool_lock:
                if conn in self._all:
                    self._all.remove(conn)
            with contextlib.suppress(Exception):
                conn.close()
            if not self._ready:
                raise
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise StoreError(f"The curation store at {shown(self.location)} did not answer ({first[:200]}). "
                             "Try again; if it goes on, check the database.") from None
        except BaseException:  # a Conflict, a bad request: the connection is fine, back to the pool
            with self._pool_lock:
                self._idle.append(conn)
            raise
        else:
            with self._pool_lock:
                self._idle.append(conn)

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            for conn in self._all:
                with contextlib.suppress(Exception):
                    conn.close()
            self._all, self._idle = [], []

    # -- for modules that keep their own tables in this store (dolly/contributions.py) -----------------
    # One database, one connection pool, one locking rule: such a module writes through `writing()` (the
    # same write transaction and lock as a curation save) and reads through `reading()`.
    @contextlib.contextmanager
    def writing(self):
        """One write transaction: a cursor, committed when the block ends (before it returns), rolled back
        on an error. SQL goes through `sql()` (? placeholders in, the driver's style out)."""
        with self._connection() as conn, self._begin(conn) as cur:
            yield cur

    @contextlib.contextmanager
    def reading(self):
        """A cursor for reads (each statement sees what was committed before it)."""
        with self._connection() as conn:
            yield conn.cursor()

    def sql(self, text: str) -> str:
        return self._q(text)

    @property
    def id_column(self) -> str:
        """The column definition of an auto-numbered primary key `id` in this database's SQL."""
        return self._id_column

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _create(self, conn) -> None:
        with self._begin(conn) as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS curation_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            cur.execute("CREATE TABLE IF NOT EXISTS curation_state (dataset TEXT NOT NULL, row_id BIGINT NOT NULL, "
                        "version INTEGER NOT NULL, status TEXT NOT NULL, fields TEXT NOT NULL, reason TEXT NOT NULL, "
                        "author TEXT NOT NULL, changed_at TEXT NOT NULL, PRIMARY KEY (dataset, row_id))")
            cur.execute(f"CREATE TABLE IF NOT EXISTS curation_history ({self._id_column}, dataset TEXT NOT NULL, "
                        "row_id BIGINT NOT NULL, version INTEGER NOT NULL, action TEXT NOT NULL, undoes BIGINT, "
                        "author TEXT NOT NULL, changed_at TEXT NOT NULL, state_before TEXT NOT NULL, "
                        "state_after TEXT NOT NULL, UNIQUE (dataset, row_id, version))")
            cur.execute(self._q("SELECT value FROM curation_meta WHERE name = ?"), ("schema",))
            found = cur.fetchone()
            if found is None:
                cur.execute(self._q("INSERT INTO curation_meta (name, value) VALUES (?, ?)"), ("schema", SCHEMA_VERSION))
            elif found[0] != SCHEMA_VERSION:
                raise StoreError(f"The curation store at {shown(self.location)} has schema version {found[0]}; this "
                                 f"open Dolly reads version {SCHEMA_VERSION}. Update open Dolly, or point {SETTING} "
                                 "at another store.")

    # -- reading -----------------------------------------------------------------------------------
    _STATE_COLUMNS = "row_id, version, status, fields, reason, author, changed_at"

    @staticmethod
    def _state(found) -> RecordState:
        row, version, status, fields, reason, author, at = found
        return RecordState(int(row), int(version), status, json.loads(fields), reason, author, at)

    def state(self, dataset: str, row: int) -> RecordState:
        """The record's current state (version 0, status "" when it was never touched)."""
        row = _row(row)
        with self._connection() as conn:
            cur = conn.cursor()
            cur.execute(self._q(f"SELECT {self._STATE_COLUMNS} FROM curation_state WHERE dataset = ? AND row_id = ?"),
                        (dataset, row))
            found = cur.fetchone()
        return self._state(found) if found else RecordState(row)

    def states(self, dataset: str) -> dict[int, RecordState]:
        """Every record of `dataset` that has a state (undone ones too, status ""), by row."""
        with self._connection() as conn:
            cur = conn.cursor()
            cur.execute(self._q(f"SELECT {self._STATE_COLUMNS} FROM curation_state WHERE dataset = ? ORDER BY row_id"),
                        (dataset,))
            return {int(found[0]): self._state(found) for found in cur.fetchall()}

    def counts(self, dataset: str) -> dict[str, int]:
        """Records of `dataset` per decision: {"edited": n, "excluded": n, "accepted": n}."""
        with self._connection() as conn:
            cur = conn.cursor()
            cur.execute(self._q("SELECT status, COUNT(*) FROM curation_state WHERE dataset = ? GROUP BY status"),
                        (dataset,))
            found = dict(cur.fetchall())
        return {status: int(found.get(status, 0)) for status in STATUSES}

    def history(self, dataset: str, row: int) -> list[Change]:
        """Every change of the record, oldest first."""
        with self._connection() as conn:
            cur = conn.cursor()
            return [change for change, _ in self._history(cur, dataset, _row(row))]

    def _history(self, cur, dataset: str, row: int) -> list[tuple[Change, tuple]]:
        cur.execute(self._q(f"SELECT {self._id_column.split()[0]}, version, action, undoes, author, changed_at, "
                            "state_before, state_after FROM curation_history WHERE dataset = ? AND row_id = ? "
                            "ORDER BY version"), (dataset, row))
        out = []
        for change_id, version, action, undoes, author, at, before, after in cur.fetchall():
            before, after = json.loads(before), json.loads(after)
            out.append((Change(int(version), action, author, at,
                               RecordState(row, int(version) - 1, before["status"], before["fields"], before["reason"],
                                           before.get("author", ""), before.get("at", "")),
                               RecordState(row, int(version), after["status"], after["fields"], after["reason"],
                                           author, at)),
                        (int(change_id), undoes)))
        return out

    # -- writing -----------------------------------------------------------------------------------
    def edit(self, dataset: str, row: int, version: int, fields: dict, author: str = "") -> RecordState:
        """Save new values of some of instruction, context, response, category (only those given change)."""
        return self._save(dataset, {_row(row): (version, "edit", _fields(fields))}, author)[0]

    def exclude(self, dataset: str, row: int, version: int, reason: str, author: str = "") -> RecordState:
        """Leave the record out of the curated dataset, saying why."""
        if not isinstance(reason, str) or not reason.strip():
            raise CurationError("Say why the record is excluded (a reason is required), e.g. 'duplicate of row 7'.")
        return self._save(dataset, {_row(row): (version, "exclude", reason.strip())}, author)[0]

    def accept(self, dataset: str, row: int, version: int, author: str = "") -> RecordState:
        """Mark the record reviewed: it stays as it stands (with its edits, if any)."""
        return self._save(dataset, {_row(row): (version, "accept", None)}, author)[0]

    def undo(self, dataset: str, row: int, version: int, author: str = "") -> RecordState:
        """Revert the record's last change still in force (NothingToUndo when there is none)."""
        return self._save(dataset, {_row(row): (version, "undo", None)}, author)[0]

    def edit_many(self, dataset: str, edits: dict, author: str = "") -> list[RecordState]:
        """Edit several records at once, {row: (version opened, fields)}: all saved, or none (Conflict)."""
        if not edits:
            return []
        return self._save(dataset, {_row(row): (version, "edit", _fields(fields))
                                    for row, (version, fields) in edits.items()}, author)

    def _save(self, dataset: str, changes: dict, author: str) -> list[RecordState]:
        if not isinstance(dataset, str) or not dataset:
            raise CurationError("No dataset key: pass dataset_key(frame) of the loaded dataset.")
        author = (author or "").strip() or ANONYMOUS
        at = datetime.now(timezone.utc).isoformat(timespec="microseconds")
        opened = {row: _version(version) for row, (version, _, _) in changes.items()}
        try:
            with self._connection() as conn, self._begin(conn) as cur:
                current = self._current(cur, dataset, list(changes))
                stale = [current[row] for row in changes if current[row].version != opened[row]]
                if stale:
                    raise Conflict(stale, opened, len(changes))
                return [self._write(cur, dataset, current[row], action, value, author, at)
                        for row, (_, action, value) in changes.items()]
        except self._unique_errors:
            # Another save of a new record won the race between our read and our insert.
            with self._connection() as conn:
                cur = conn.cursor()
                current = self._current(cur, dataset, list(changes), lock=False)
            stale = [current[row] for row in changes if current[row].version != opened[row]]
            raise Conflict(stale or [current[next(iter(changes))]], opened, len(changes)) from None

    def _current(self, cur, dataset: str, rows: list[int], lock: bool = True) -> dict[int, RecordState]:
        found = {}
        for start in range(0, len(rows), 500):
            part = rows[start:start + 500]
            cur.execute(self._q(f"SELECT {self._STATE_COLUMNS} FROM curation_state WHERE dataset = ? AND row_id IN "
                                f"({', '.join('?' * len(part))}){self._lock_row if lock else ''}"), (dataset, *part))
            found.update({int(r[0]): self._state(r) for r in cur.fetchall()})
        return {row: found.get(row, RecordState(row)) for row in rows}

    def _write(self, cur, dataset, old: RecordState, action, value, author, at) -> RecordState:
        undoes = None
        if action == "edit":
            new = {"status": "edited", "fields": {**old.fields, **value}, "reason": ""}
        elif action == "exclude":
            new = {"status": "excluded", "fields": old.fields, "reason": value}
        elif action == "accept":
            new = {"status": "accepted", "fields": old.fields, "reason": ""}
        else:
            history = self._history(cur, dataset, old.row)
            undone = {ids[1] for change, ids in history if change.action == "undo"}
            target = next(((change, ids) for change, ids in reversed(history)
                           if change.action != "undo" and ids[0] not in undone), None)
            if target is None:
                raise NothingToUndo(f"Row {old.row} has no change to undo: it is the original record.")
            undoes, before = target[1][0], target[0].before
            new = before._payload()
        version = old.version + 1
        after = RecordState(old.row, version, new["status"], new["fields"], new["reason"], author, at)
        args = (version, after.status, json.dumps(after.fields), after.reason, author, at)
        if old.version == 0:
            cur.execute(self._q("INSERT INTO curation_state (dataset, row_id, version, status, fields, reason, author, "
                                "changed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"), (dataset, old.row, *args))
        else:
            cur.execute(self._q("UPDATE curation_state SET version = ?, status = ?, fields = ?, reason = ?, author = ?, "
                                "changed_at = ? WHERE dataset = ? AND row_id = ? AND version = ?"),
                        (*args, dataset, old.row, old.version))
            if cur.rowcount != 1:  # cannot happen under the row lock; never write past it regardless
                raise Conflict([self._current(cur, dataset, [old.row], lock=False)[old.row]], {old.row: old.version})
        before = {**old._payload(), "author": old.author, "at": old.at}
        cur.execute(self._q("INSERT INTO curation_history (dataset, row_id, version, action, undoes, author, changed_at, "
                            "state_before, state_after) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"),
                    (dataset, old.row, version, action, undoes, author, at, json.dumps(before),
                     json.dumps(after._payload())))
        return after


def _row(row) -> int:
    if isinstance(row, (bool, np.bool_)) or not isinstance(row, (int, np.integer)) or row < 0:
        raise CurationError(f"A row number is a whole number from 0, got {row!r:.40}.")
    return int(row)


def _version(version) -> int:
    if isinstance(version, (bool, np.bool_)) or not isinstance(version, (int, np.integer)) or version < 0:
        raise CurationError(f"A version is a whole number from 0 (the version the editor opened), got {version!r:.40}.")
    return int(version)


def _fields(fields) -> dict:
    if not isinstance(fields, dict) or not fields:
        raise CurationError(f"An edit gives new values for some of {', '.join(FIELDS)}, as a dict; got {fields!r:.80}.")
    unknown = [name for name in fields if name not in FIELDS]
    if unknown:
        raise CurationError(f"Only {', '.join(FIELDS)} can be edited, not {', '.join(map(str, unknown))}.")
    bad = [name for name, value in fields.items() if not isinstance(value, str)]
    if bad:
        raise CurationError(f"Edited values are text; {', '.join(bad)} is not.")
    if "category" in fields and not fields["category"].strip():
        raise CurationError("The category cannot be empty.")
    return dict(fields)


class SQLiteStore(Store):
    """One SQLite file: WAL (readers never wait for a writer), synchronous=FULL (a confirmed save is on
    disk); writers take turns on a lock within a process and on `<file>.lock` between processes."""

    _unique_errors = (sqlite3.IntegrityError,)
    _lost_errors = (sqlite3.OperationalError,)
    _id_column = "id INTEGER PRIMARY KEY AUTOINCREMENT"

    def __init__(self, path: Path):
        self.path, self.location = path, str(path)
        self._write_lock = threading.Lock()
        if path.is_dir():
            raise StoreError(f"{SETTING}: {path} is a folder; give the store's file, e.g. {path / FILE_NAME}.")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise StoreError(f"{SETTING}: cannot make the folder {path.parent} for the curation store "
                             f"({error.strerror or error}). Point it at a file in a folder you can write.") from None
        try:
            with open(path, "rb") as existing:
                header = existing.read(16)
        except FileNotFoundError:
            header = b""
        except OSError as error:
            raise StoreError(f"{SETTING}: cannot read {path} ({error.strerror or error}).") from None
        if header and header != b"SQLite format 3\x00":
            raise StoreError(f"{SETTING}: {path} is not an SQLite database. Point it at a new file (it is created) "
                             "or at the curation store's own file.")
        try:
            super().__init__()
        except sqlite3.DatabaseError as error:
            self.close()
            what = ("is not an SQLite database" if "not a database" in str(error) or "malformed" in str(error)
                    else f"cannot be used ({error})")
            raise StoreError(f"{SETTING}: {path} {what}. Point it at a new file (it is created) or at the curation "
                             "store's own file.") from None

    def _connect(self):
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA busy_timeout = 30000")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StoreError(f"{SETTING}: {self.path} cannot use SQLite's WAL mode (got {mode}); put it on a local disk.")
        conn.execute("PRAGMA synchronous = FULL")
        return conn

    @contextlib.contextmanager
    def _begin(self, conn):
        with self._write_lock, self._file_lock():
            cur = conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                if conn.in_transaction:
                    cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")

    @contextlib.contextmanager
    def _file_lock(self):
        """Writers of several processes (two apps, a CLI) queue on a lock file beside the database: the
        kernel wakes a waiter when the lock is free, where SQLite's own busy wait polls with growing sleeps
        and can leave one process waiting seconds while others keep writing."""
        if fcntl is None:
            yield
            return
        handle = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
            yield
        finally:
            os.close(handle)  # releases the lock


class PostgresStore(Store):
    """A PostgreSQL database (several app replicas share it): rows being saved are locked (SELECT ... FOR
    UPDATE) for the transaction, so the version check and the write are one step."""

    _id_column = "id BIGSERIAL PRIMARY KEY"
    _lock_row = " FOR UPDATE"

    def __init__(self, url: str):
        try:
            import psycopg
        except ImportError:
            raise StoreError(f"{SETTING} is a PostgreSQL URL, which needs the psycopg package: "
                             "pip install 'psycopg[binary]'.") from None
        self._psycopg, self.location = psycopg, url
        self._unique_errors = (psycopg.errors.UniqueViolation,)
        self._lost_errors = (psycopg.OperationalError,)
        try:
            for attempt in range(3):  # replicas starting at once race to create the tables: the loser retries
                try:
                    super().__init__()
                    break
                except (psycopg.errors.UniqueViolation, psycopg.errors.DuplicateTable):
                    self.close()
                    self._closed = False
                    if attempt == 2:
                        raise
        except psycopg.Error as error:
            self.close()
            first = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise StoreError(f"{SETTING}: could not use the PostgreSQL database at {shown(url)} ({first}). Check the "
                             "URL (postgresql://user:password@host:port/database), that the server runs, and that the "
                             "user may create tables there.") from None

    def _q(self, sql: str) -> str:
        return sql.replace("?", "%s")

    def _connect(self):
        return self._psycopg.connect(self.location, autocommit=True, connect_timeout=10)

    @contextlib.contextmanager
    def _begin(self, conn):
        with conn.transaction():
            yield conn.cursor()


# -- applying ------------------------------------------------------------------------------------------
def curated(records: pd.DataFrame | pa.Table, states: dict[int, RecordState], rows=None,
            column: bool = False) -> pd.DataFrame | pa.Table:
    """`records` as curated: each record's edits applied, excluded records removed, the order kept.

    `records` is load_records' DataFrame (or a Table) of the dataset or of a selection of it; `rows` are
    the dataset row numbers of its rows (default 0, 1, ...). With `column`, a `curation` column is added
    (or updated) after the others: "edited" or "accepted" for records with that decision, "" for the rest
    (excluded ones are gone), so the file stays in the dolly schema that `python -m train --data` reads.
    Returns the same kind it was given."""
    table = records if isinstance(records, pa.Table) else None
    frame = records.to_pandas() if table is not None else records.reset_index(drop=True)  # copy-on-write: records stay as they are
    rows = np.arange(len(frame), dtype=np.int64) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(rows) != len(frame):
        raise CurationError(f"{len(rows):,} row numbers for {len(frame):,} records.")
    position = {int(row): i for i, row in enumerate(rows)} if len(states) < len(rows) else None
    keep = np.ones(len(frame), bool)
    marks = frame[COLUMN].astype("str").to_numpy(dtype=object) if COLUMN in frame.columns \
        else np.full(len(frame), "", dtype=object)
    edits: dict[str, tuple[list[int], list[str]]] = {}
    lookup = position.get if position is not None else _lookup(rows)
    for row, state in states.items():
        i = lookup(int(row))
        if i is None:
            continue
        if state.status == "excluded":
            keep[i] = False
            continue
        for name, value in state.fields.items():
            edits.setdefault(name, ([], []))
            edits[name][0].append(i)
            edits[name][1].append(value)
        if state.status:
            marks[i] = state.status
    for name, (where, values) in edits.items():
        if name in frame.columns:
            frame.loc[where, name] = values
    if column:
        frame[COLUMN] = marks
    frame = frame[keep].reset_index(drop=True)
    if table is None:
        return frame
    return pa.Table.from_pandas(frame, preserve_index=False)


def _lookup(rows: np.ndarray):
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]

    def find(row: int):
        i = int(np.searchsorted(ordered, row))
        return int(order[i]) if i < len(ordered) and ordered[i] == row else None

    return find
