"""Loading something slow (a dataset, a model) in a background thread, so the app serves meanwhile.

A million rows take seconds to read, a model minutes to download, and an unreachable Hub makes a
client retry for a while; none of it should keep the server from answering. A `Background` says
where loading is (`state`, `stage`, `elapsed`, `error`) and hands out the result once it is there
(`get`). Each tab words its own status line from these; nothing here knows about Gradio.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class NotReady(RuntimeError):
    """Nothing to hand out yet (still loading) or ever (the load failed); the message says which."""


class Background(Generic[T]):
    """Runs `load(stage)` in a thread; `stage(text)` lets the load say what it is doing.

    Exceptions of the types in `expected` carry a message meant for the user and become `error`
    as they are; any other exception is worded with its type, and the app keeps serving either way.
    `on_done(self)` runs in the thread once loading ended, either way.
    """

    def __init__(self, what: str, load: Callable[[Callable[[str], None]], T], *,
                 expected: tuple[type[BaseException], ...] = (),
                 on_done: Callable[["Background"], None] | None = None):
        self.what = what
        self._load_fn, self._expected, self._on_done = load, expected, on_done
        self._value: T | None = None
        self._error: str | None = None
        self._stage = "waiting to start"
        self._started: float | None = None
        self._took: float | None = None
        self._thread: threading.Thread | None = None
        self._done = threading.Event()

    def start(self) -> "Background[T]":
        if self._thread is None:
            self._started = time.monotonic()
            self._thread = threading.Thread(target=self._run, name=f"load {self.what}", daemon=True)
            self._thread.start()
        return self

    def _set_stage(self, text: str) -> None:
        self._stage = text

    def _run(self):
        try:
            self._value = self._load_fn(self._set_stage)
        except self._expected as error:
            self._error = str(error)
        except Exception as error:  # an unexpected failure must still leave the app serving
            lines = str(error).strip().splitlines()
            self._error = f"Could not load {self.what}: {type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")
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
        if self._value is not None:
            return "ready"
        if self._error is not None:
            return "failed"
        return "loading"

    @property
    def error(self) -> str | None:
        """Why loading failed (None while loading or once loaded)."""
        return self._error

    @property
    def stage(self) -> str:
        return self._stage

    @property
    def elapsed(self) -> float:
        """Seconds spent loading so far (or in all, once done)."""
        if self._took is not None:
            return self._took
        return time.monotonic() - self._started if self._started is not None else 0.0

    def get(self) -> T:
        """The loaded value, or NotReady saying why there is none (yet)."""
        if self._value is not None:
            return self._value
        if self._error is not None:
            raise NotReady(self._error)
        raise NotReady(f"{self.what} is still loading ({self._stage}, {self.elapsed:.0f} s so far); try again in a moment.")
