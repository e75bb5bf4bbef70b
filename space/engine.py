"""One way to generate a reply, wherever the model runs: the Chat tab, `/chat` and `/v1` all call an
engine, and never care whether the model is in this process (`LocalEngine`, around space/chat.py)
or behind an OpenAI-compatible server (`space.backend.BackendEngine`, for `--backend URL`).

An engine turns a request into a `Generation`: checked settings and a Dolly prompt up front (so a
bad request fails before anything runs), then, when iterated, the reply's visible text as it grows.
Every generation, whoever asked for it, takes one slot of the same `Limiter`: that is what
`--concurrency` bounds.
"""
from __future__ import annotations

import threading
from typing import Callable, Iterable, Iterator

from space.chat import (MAX_INPUT_CHARS, ChatInputError, Settings, build_prompt, check_unicode, fit_to_window,
                        prompt_budget, stream_reply, validate_settings)
from space.model import ModelLoader

# How long a waiting reply sleeps between looks at whether it was cancelled while all slots are busy.
_SLOT_POLL_S = 0.1


class Limiter:
    """How many replies are generated at once (`--concurrency`), for the Chat tab, /chat and /v1
    together: one semaphore, so API callers cannot crowd out the chat or the other way round."""

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError(f"concurrency must be 1 or more, got {limit}")
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    def acquire(self, cancelled: threading.Event) -> bool:
        """Wait for a slot; False when `cancelled` was set first (the caller went away while queued)."""
        while not self._slots.acquire(timeout=_SLOT_POLL_S):
            if cancelled.is_set():
                return False
        return True

    def release(self) -> None:
        self._slots.release()


def hold_back_stop(text: str, stops: Iterable[str], final: bool) -> tuple[str, bool]:
    """(what may be shown of `text`, whether a stop string ended it): the text before the first stop
    string; while streaming, a tail that could be the start of one is held back until it is not."""
    stops = [s for s in stops if s]
    hits = [i for i in (text.find(s) for s in stops) if i != -1]
    if hits:
        return text[:min(hits)].rstrip(), True
    if not final:
        for stop in stops:
            for k in range(len(stop) - 1, 0, -1):
                if text.endswith(stop[:k]):
                    return text[:-k].rstrip(), False
    return text, False


class Generation:
    """One reply. Iterate it (once) for the visible text so far, each value extending the last; when
    the iteration is over, `finish_reason` ("stop" or "length") and `completion_tokens` are set.

    `cancel()` may be called from any thread (Stop, a client that went away): the reply ends at its
    next token, and a remote stream is closed at once. The slot of the limiter is held only while
    the reply is being generated, and always given back.
    """

    def __init__(self, produce: Callable[["Generation"], Iterator[str]], limiter: Limiter, *,
                 settings: Settings, notices: Iterable[str] = (), prompt_tokens: int | None = None,
                 stop: Iterable[str] = ()):
        self._produce, self._limiter = produce, limiter
        self.settings = settings
        self.notices = list(notices)
        # What was cut from a chat's prompt to fit the window (space/chat.py's Prompt says); /v1 reports it.
        self.trimmed: dict = {}
        self.prompt_tokens = prompt_tokens
        self.completion_tokens: int | None = None
        self.finish_reason: str | None = None
        self.stop_strings = [s for s in stop if s]
        self.cancelled = threading.Event()
        self._on_cancel: list[Callable[[], None]] = []
        self._cancel_lock = threading.Lock()
        self._slot_kept = False

    def keep_slot(self) -> Callable[[], None]:
        """For a producer whose model runs on after it is closed (a generate() thread stops at its next
        token): the slot is then given back when the producer calls what this returns, not when the
        iteration ends. Call it (once) while producing."""
        self._slot_kept = True
        return self._limiter.release

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Run `callback` (from whichever thread cancels) when this reply is cancelled; at once if it was."""
        with self._cancel_lock:
            if not self.cancelled.is_set():
                self._on_cancel.append(callback)
                return
        callback()

    def cancel(self) -> None:
        with self._cancel_lock:
            if self.cancelled.is_set():
                return
            self.cancelled.set()
            callbacks, self._on_cancel = self._on_cancel, []
        for callback in callbacks:
            callback()

    def __iter__(self) -> Iterator[str]:
        if not self._limiter.acquire(self.cancelled):
            return
        shown, raw = "", ""
        try:
            for raw in self._produce(self):
                text, stopped = hold_back_stop(raw, self.stop_strings, final=False)
                if text and text != shown:
                    shown = text
                    yield text
                if stopped:  # one of the caller's stop strings: the reply is over
                    self.finish_reason = "stop"
                    return
            if not self.cancelled.is_set():  # the whole reply: a tail held back for a stop string is not one
                final, _ = hold_back_stop(raw, self.stop_strings, final=True)
                if final and final != shown:
                    yield final
        finally:
            self.cancel()
            if not self._slot_kept:
                self._limiter.release()

    def finished(self, finish_reason: str, completion_tokens: int | None) -> None:
        """Producers call this when the model (or backend) ended the reply by itself."""
        if self.finish_reason is None:
            self.finish_reason = finish_reason
        self.completion_tokens = completion_tokens


def check_texts(**texts: str) -> None:
    """The size limit on each text a request carries, and that it is text (no lone surrogate), checked
    before any tokenizing or sending."""
    for name, text in texts.items():
        if text and len(text) > MAX_INPUT_CHARS:
            raise ChatInputError(f"The {name} is {len(text):,} characters; the limit is {MAX_INPUT_CHARS:,}. Shorten it.")
        if text:
            check_unicode(name, text)


class LocalEngine:
    """The model in this process (loaded in the background by ModelLoader)."""

    kind = "local"

    def __init__(self, loader: ModelLoader, concurrency: int = 2):
        self.loader = loader
        self.limiter = Limiter(concurrency)

    # What the Chat tab's status line and /v1/models read.
    @property
    def state(self) -> str:
        return self.loader.state

    def status(self) -> str:
        return self.loader.status()

    @property
    def may_change(self) -> bool:
        """Whether the state may change by itself: only while the model loads."""
        return self.loader.state == "loading"

    @property
    def model_id(self) -> str:
        """The model's name for /v1 callers: a Hub id as it is, a local folder by its name only
        (the server's paths are nobody's business)."""
        from pathlib import Path

        from dolly.source import is_local

        return Path(self.loader.name).name if is_local(self.loader.name) else self.loader.name

    @property
    def window(self) -> int | None:
        return self.loader.get().window if self.loader.state == "ready" else None

    @property
    def named_model(self) -> str:
        """The model the Chat tab's intro names: known from the start."""
        return self.model_id

    def ensure_ready(self) -> None:
        """ModelError (saying why) unless the model is loaded."""
        self.loader.get()

    def chat(self, message: str, context: str = "", history=(), stop: Iterable[str] = (), **settings) -> Generation:
        """A reply to a chat message, folded into one Dolly prompt exactly as the Chat tab does."""
        lm = self.loader.get()  # ModelError while loading or after a failed load
        checked = fit_to_window(validate_settings(**settings), lm.window)
        prompt = build_prompt(lm.tokenizer, message, context, history, window=lm.window,
                              max_new_tokens=checked.max_new_tokens)
        generation = self._generation(lm, prompt.input_ids, checked, list(checked.notices) + prompt.notices, stop)
        generation.trimmed = {"turns_dropped": prompt.turns_dropped,
                              "context_tokens_dropped": prompt.context_tokens_dropped}
        return generation

    def complete(self, prompt: str, stop: Iterable[str] = (), **settings) -> Generation:
        """A plain completion of `prompt` (/v1/completions): the caller's text as the model reads it,
        Dolly's markers included, which is how a front end like `--backend` sends a Dolly prompt."""
        lm = self.loader.get()
        checked = fit_to_window(validate_settings(**settings), lm.window)
        if not prompt:
            raise ChatInputError("prompt is empty: send the text to complete.")
        check_texts(prompt=prompt)
        ids = lm.tokenizer.encode(prompt, add_special_tokens=False)
        budget = prompt_budget(lm.window, checked.max_new_tokens)
        if len(ids) > budget:
            raise ChatInputError(
                f"The prompt is {len(ids)} tokens; with room for {checked.max_new_tokens} new tokens the "
                f"{lm.window}-token window leaves {max(budget, 0)}. Shorten it or lower max_tokens.")
        return self._generation(lm, ids, checked, list(checked.notices), stop)

    def _generation(self, lm, ids, settings: Settings, notices, stop) -> Generation:
        def produce(generation: Generation):
            usage, stop = {}, threading.Event()
            generation.on_cancel(stop.set)  # generate() ends at its next token
            yield from stream_reply(lm, ids, settings, stop=stop, usage=usage, on_end=generation.keep_slot())
            if usage:
                generation.finished(usage["finish_reason"], usage["completion_tokens"])

        return Generation(produce, self.limiter, settings=settings, notices=notices, prompt_tokens=len(ids), stop=stop)
