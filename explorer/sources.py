"""The datasets the Explorer shows: the loaded one, the contributions, or both (issue 17 §3).

Each is a `Source`: an Index of its records (explorer.query), their quality signals (computed in the
background, as for the loaded data: explorer.loader) and where each row's curation decisions live in the
store. The loaded dataset's decisions are keyed by its content and row (key_of);
the contributions' by CONTRIBUTIONS_KEY and the contribution's id, which stays the same when records are
added or rejected, though the record's row in the Explorer may move. "both" is the loaded records, then
the contributions, with a `dataset` column saying which: a decision on a row of it is a decision on that
record in its own dataset, seen the same from every view.

The contributions are read again whenever the store says they changed (dolly.contributions.revision),
on the next request that asks for them. Nothing here knows about Gradio.
"""
from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dolly import contributions
from dolly.curation import RecordState, Store, dataset_key
from dolly.data import REQUIRED_COLUMNS
from explorer.loader import DatasetLoader, QualitySignals
from explorer.query import Index, QueryError

LOADED, CONTRIBUTIONS, BOTH = "loaded", "contributions", "both"
NAMES = (LOADED, CONTRIBUTIONS, BOTH)
CONTRIBUTIONS_KEY = "contributions"  # the contributions' dataset in the curation store (rows: contribution ids)
DATASET_COLUMN = "dataset"  # in "both": which dataset a record comes from

_KEY_LOCK = threading.Lock()


def key_of(index: Index) -> str:
    """The loaded dataset's identity in the store, hashed once per loaded Index (a second for 15k rows)."""
    with _KEY_LOCK:
        key = getattr(index, "_curation_key", None)
        if key is None:
            key = index._curation_key = dataset_key(index.frame())
        return key


@dataclass(frozen=True)
class Part:
    """One dataset inside a Source: its key in the curation store, its first row in the Source's Index,
    and each record's row in the store (None: the same as its row within the part)."""

    key: str
    start: int
    stop: int
    ids: np.ndarray | None = None


@dataclass
class Source:
    name: str
    index: Index
    parts: tuple[Part, ...]
    quality: QualitySignals  # the signals of `index` (a DatasetLoader's own for the loaded dataset)

    def locate(self, row: int) -> tuple[str, int]:
        """(store key, store row) of the Index's `row`: where its curation decisions are kept."""
        row = int(row)
        for part in self.parts:
            if part.start <= row < part.stop:
                local = row - part.start
                return part.key, int(part.ids[local]) if part.ids is not None else local
        raise QueryError(f"No row {row}: the {self.name} records have rows 0 to {self.index.num_rows - 1}.")

    def states(self, store: Store | None) -> dict[int, RecordState]:
        """The decisions on this Source's records, by their row in its Index."""
        if store is None:
            return {}
        found: dict[int, RecordState] = {}
        for part in self.parts:
            saved = store.states(part.key)
            if not saved:
                continue
            if part.ids is None:
                found.update({part.start + row: state for row, state in saved.items() if row < part.stop - part.start})
            else:
                where = {int(id_): part.start + i for i, id_ in enumerate(part.ids)}
                found.update({where[row]: state for row, state in saved.items() if row in where})
        return found

    def counts(self, store: Store | None) -> dict[str, int]:
        """Records edited, excluded and accepted among this Source's records."""
        return dict(Counter(state.status for state in self.states(store).values() if state.status))


SOURCE_KEY = "_source"  # in an opened record: the Source it was opened from (the screen never shows it)


def opened_record(source: Source, row: int) -> dict:
    """The record at `row` of `source`, as the Explorer opens it: it says which Source it belongs to, so the
    decisions taken on it go to that Source's store rows whatever the page's controls say meanwhile."""
    return {**source.index.record(row), SOURCE_KEY: source.name}


def source_of(record: dict | None) -> str:
    """The name of the Source an opened record came from (the loaded dataset for one opened before sources)."""
    return (record or {}).get(SOURCE_KEY) or LOADED


class Sources:
    """The Sources of one app: the loaded dataset (`dataset`), and with a curation store the
    contributions and both. `get(name)` hands out the Source, building it when the data changed."""

    def __init__(self, dataset: DatasetLoader, store: Store | None):
        self.dataset, self.store = dataset, store
        self._lock = threading.Lock()
        self._built: dict[str, tuple[tuple, Index, Source]] = {}

    @property
    def names(self) -> tuple[str, ...]:
        return NAMES if self.store is not None else (LOADED,)

    def check(self, name) -> str:
        """`name` when this app has that Source; else a QueryError naming the choices."""
        name = LOADED if name in (None, "") else name
        if name not in self.names:
            if name in NAMES:
                raise QueryError(f"source: '{name}' needs a contribution store, and this Explorer has none. "
                                 "Use 'loaded'.")
            raise QueryError(f"source: one of {', '.join(repr(n) for n in self.names)}, got {str(name)[:40]!r}.")
        return name

    def get(self, name: str = LOADED) -> Source:
        """The Source `name`; DatasetNotReady while the loaded dataset is not there (every Source needs it
        to be ready: the Explorer's screen waits for it), QueryError for a name this app has not."""
        name = self.check(name)
        loaded = self.dataset.get()
        if name == LOADED:
            return Source(LOADED, loaded, (Part(key_of(loaded), 0, loaded.num_rows),), self.dataset.quality)
        with self._lock:  # one build per change, however many people ask at once
            revision = contributions.revision(self.store)
            built = self._built.get(name)
            if built is not None and built[0] == revision and built[1] is loaded:
                return built[2]
            source = self._build(name, loaded)
            self._built[name] = (revision, loaded, source)
            return source

    def _build(self, name: str, loaded: Index) -> Source:
        frame = contributions.records(self.store, meta=True)
        ids = frame.pop("id").to_numpy(dtype=np.int64)
        if name == CONTRIBUTIONS:
            frame.insert(len(REQUIRED_COLUMNS), "contribution", pd.Series(ids.astype(str), dtype="str"))
            index = Index(frame)
            parts = (Part(CONTRIBUTIONS_KEY, 0, len(frame), ids),)
        else:
            own = loaded.frame()[list(REQUIRED_COLUMNS)]
            both = pd.concat([own, frame[list(REQUIRED_COLUMNS)]], ignore_index=True)
            both[DATASET_COLUMN] = pd.Series([LOADED] * len(own) + [CONTRIBUTIONS] * len(frame), dtype="str")
            index = Index(both)
            parts = (Part(key_of(loaded), 0, len(own)), Part(CONTRIBUTIONS_KEY, len(own), len(both), ids))
        return Source(name, index, parts, QualitySignals().start_for(index))
