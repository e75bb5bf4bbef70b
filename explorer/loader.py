"""Loading the Explorer's dataset in a background thread, so the app serves while it loads.

A million rows take seconds to read and index, and an unreachable Hub makes the client retry for
tens of seconds; neither should keep the server from answering. `DatasetLoader.status()` says
where loading is, `get()` hands out the `Index` once it is there. Nothing here knows about Gradio.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

from explorer.data import DataError, load_records
from explorer.query import Index


class DatasetNotReady(RuntimeError):
    """The dataset is still loading, or did not load; the message says which, for the person asking."""


def build_index(source: str) -> Index:
    """The default load: read `source` (file, folder or Hub id) and index it. Raises DataError."""
    return Index(load_records(source))


class DatasetLoader:
    """Loads `source` with `load` (build_index unless given) in a thread; ask `state`, `status()`, `get()`."""

    def __init__(self, source: str, load: Callable[[str], Index] = build_index,
                 on_done: Callable[["DatasetLoader"], None] | None = None):
        self.source = str(source)
        self._load_fn, self._on_done = load, on_done
        self._index: Index | None = None
        self._error: str | None = None
        self._started: float | None = None
        self._took: float | None = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()

    def start(self) -> "DatasetLoader":
        if self._thread is None:
            self._started = time.monotonic()
            self._thread = threading.Thread(target=self._load, name="dataset-load", daemon=True)
            self._thread.start()
        return self

    def _load(self):
        try:
            self._index = self._load_fn(self.source)
        except DataError as error:
            self._error = str(error)
        except Exception as error:  # an unexpected failure must still leave the app serving
            self._error = f"Could not load the dataset '{self.source}': {type(error).__name__}: {error}"
        finally:
            self._took = time.monotonic() - (self._started or time.monotonic())
            self._done.set()
            if self._on_done is not None:
                self._on_done(self)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until loading finished (either way); True when it did within `timeout`."""
        return self._done.wait(timeout)

    @property
    def state(self) -> str:
        """'loading', 'ready' or 'failed'."""
        if self._index is not None:
            return "ready"
        if self._error is not None:
            return "failed"
        return "loading"

    @property
    def error(self) -> str | None:
        """Why the dataset did not load (None while loading or once loaded)."""
        return self._error

    @property
    def elapsed(self) -> float:
        """Seconds spent loading so far (or in all, once done)."""
        if self._took is not None:
            return self._took
        return time.monotonic() - self._started if self._started is not None else 0.0

    def status(self) -> str:
        """One line of Markdown for the Explorer tab."""
        if self._index is not None:
            return f"**Dataset ready:** {self.source}, {self._index.num_rows:,} rows, loaded in {self.elapsed:.1f} s."
        if self._error is not None:
            return f"**Could not load the dataset.** {self._error}"
        return f"**Loading dataset** {self.source} … ({self.elapsed:.0f} s so far). The Chat tab works meanwhile."

    def get(self) -> Index:
        """The loaded Index, or DatasetNotReady saying why there is none (yet)."""
        if self._index is not None:
            return self._index
        if self._error is not None:
            raise DatasetNotReady(f"The dataset did not load: {self._error}")
        raise DatasetNotReady(f"The dataset is still loading ({self.elapsed:.0f} s so far); try again in a moment.")
