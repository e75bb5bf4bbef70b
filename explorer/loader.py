"""Loading the Explorer's dataset in the background (dolly.background), so the app serves while it loads.

`DatasetLoader.status()` words where loading is for the Explorer tab, `get()` hands out the `Index`
once it is there. Nothing here knows about Gradio.
"""
from __future__ import annotations

from typing import Callable

from dolly.background import Background, NotReady
from dolly.data import DataError, load_records
from explorer.query import Index


class DatasetNotReady(NotReady):
    """The dataset is still loading, or did not load; the message says which, for the person asking."""


def build_index(source: str) -> Index:
    """The default load: read `source` (file, folder or Hub id) and index it. Raises DataError."""
    return Index(load_records(source))


class DatasetLoader(Background[Index]):
    """Loads `source` with `load` (build_index unless given) in a thread; ask `state`, `status()`, `get()`."""

    def __init__(self, source: str, load: Callable[[str], Index] = build_index,
                 on_done: Callable[["DatasetLoader"], None] | None = None):
        self.source = str(source)
        super().__init__(f"the dataset '{self.source}'", lambda stage: load(self.source),
                         expected=(DataError,), on_done=on_done)

    def status(self) -> str:
        """One line of Markdown for the Explorer tab."""
        if self.state == "ready":
            return f"**Dataset ready:** {self.source}, {self.get().num_rows:,} rows, loaded in {self.elapsed:.1f} s."
        if self.state == "failed":
            return f"**Could not load the dataset.** {self.error}"
        return f"**Loading dataset** {self.source} … ({self.elapsed:.0f} s so far)."

    def get(self) -> Index:
        """The loaded Index, or DatasetNotReady saying why there is none (yet)."""
        try:
            return super().get()
        except NotReady:
            if self.error is not None:
                raise DatasetNotReady(f"The dataset did not load: {self.error}") from None
            raise DatasetNotReady(f"The dataset is still loading ({self.elapsed:.0f} s so far); try again in a moment.") from None
