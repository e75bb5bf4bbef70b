"""Loading the Explorer's dataset in the background (dolly.background), so the app serves while it loads.

`DatasetLoader.status()` words where loading is for the Explorer tab, `get()` hands out the `Index`
once it is there. Once the data is there its quality signals (explorer.signals) are computed in a
second background thread, `DatasetLoader.quality`, with a progress fraction: the table works at once,
and the signals are attached to the Index (`Index.set_signals`) when they are done. Nothing here knows
about Gradio.
"""
from __future__ import annotations

from typing import Callable

from dolly.background import Background, NotReady
from dolly.data import DataError, Loaded, load_records, read_dataset
from explorer.query import Index
from explorer.signals import Signals, compute


class DatasetNotReady(NotReady):
    """The dataset is still loading, or did not load; the message says which, for the person asking."""


def build_index(source: str) -> Index:
    """The default load: read `source` (file, folder or Hub id) and index it. Raises DataError."""
    return Index(load_records(source))


class QualitySignals(Background[Signals]):
    """The quality signals of a loaded Index, computed in a thread (started by DatasetLoader once the data
    is there) and attached to it when done; `fraction` says how far along (0..1)."""

    def __init__(self):
        self.fraction = 0.0
        super().__init__("the quality signals", self._compute)
        self._index: Index | None = None

    def start_for(self, index: Index) -> "QualitySignals":
        self._index = index
        return self.start()

    def _compute(self, stage) -> Signals:
        def progress(fraction, desc=None):
            self.fraction = min(max(float(fraction), 0.0), 1.0)
            if desc:
                stage(str(desc))

        signals = compute(self._index.frame(), progress=progress)
        self._index.set_signals(signals)
        self.fraction = 1.0
        return signals

    def status(self) -> str:
        """One short line for the Quality filter: "" once the signals are there."""
        if self.state == "ready":
            return ""
        if self.state == "failed":
            return f"Quality signals could not be computed: {self.error}"
        if self._index is None:
            return "Quality signals are computed once the data is there."
        return f"computing quality signals… {self.fraction:.0%}"


class DatasetLoader(Background[Index]):
    """Loads `source` with `load` (read_dataset + Index unless given) in a thread; ask `state`, `status()`, `get()`.

    Once the Index is there, `quality` computes its signals in another thread (unless `signals=False`)."""

    def __init__(self, source: str, load: Callable[[str], Index] | None = None,
                 on_done: Callable[["DatasetLoader"], None] | None = None, signals: bool = True):
        self.source = str(source)
        # What the default load read (the files, the records missing fields), without the frame: the
        # Index holds the data. An empty Loaded for a custom load, which says nothing of that.
        self.loaded = Loaded(frame=None)
        self.quality = QualitySignals()

        def load_then_signals(stage) -> Index:
            index = (load or self._read)(self.source)
            if signals and isinstance(index, Index):
                self.quality.start_for(index)  # the table serves meanwhile: Index.select needs no signals
            return index

        super().__init__(f"the dataset '{self.source}'", load_then_signals, expected=(DataError,), on_done=on_done)

    def _read(self, source: str) -> Index:
        loaded = read_dataset(source)
        index = Index(loaded.frame)
        self.loaded = Loaded(frame=None, files=loaded.files, missing=loaded.missing)
        return index

    def status(self) -> str:
        """One line of Markdown for the Explorer tab."""
        if self.state == "ready":
            rows, files, missing = self.get().num_rows, self.loaded.files_note(), self.loaded.missing_note()
            read = f" from {files}" if files else ""
            if rows == 0:
                return (f"**The dataset is empty:** {self.source} has no records{read}. Load another one with "
                        "`python app.py --data path/to/file.jsonl`.")
            return (f"**Dataset ready:** {self.source}, {rows:,} rows{read}, loaded in {self.elapsed:.1f} s."
                    + (f" {missing}." if missing else ""))
        if self.state == "failed":
            return f"**Could not load the dataset.** {self.error}"
        return f"**Loading dataset** {self.source} … ({self.elapsed:.0f} s so far)."

    def note(self) -> str:
        """`status()` once loaded, when it has something to tell (no records, several files, missing
        fields), for the tab to keep in view above the data; "" otherwise, and while loading or failed."""
        if self.state != "ready":
            return ""
        loaded = self.loaded
        return self.status() if self.get().num_rows == 0 or loaded.files_note() or loaded.missing_note() else ""

    def get(self) -> Index:
        """The loaded Index, or DatasetNotReady saying why there is none (yet)."""
        try:
            return super().get()
        except NotReady:
            if self.error is not None:
                raise DatasetNotReady(f"The dataset did not load: {self.error}") from None
            raise DatasetNotReady(f"The dataset is still loading ({self.elapsed:.0f} s so far); try again in a moment.") from None
