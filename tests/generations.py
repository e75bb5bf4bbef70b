"""Watching the app's generate() threads from a test (they run in this process, beside the server)."""
import threading
import time

from space import chat
from space.chat import stream_reply, validate_settings


class PeakGenerations:
    """`with PeakGenerations() as peak:` ... then `peak.max`: the most replies generating at once
    while the block ran, sampled every 5 ms (what --concurrency bounds)."""

    def __enter__(self):
        self.samples, self._done = [], threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._done.is_set():
            self.samples.append(chat.active_generations())
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()

    @property
    def max(self) -> int:
        return max(self.samples, default=0)


def stop_and_check(cancel, before: set, timeout: float = 60) -> None:
    """Cancel a running reply with `cancel()` and check its own generate() thread (the one new since
    `before`, whatever else runs) then ends, long before its 1,000 tokens."""
    ours = chat.generation_threads() - before
    assert len(ours) == 1, ours
    cancel()
    thread = ours.pop()
    thread.join(timeout=timeout)
    assert not thread.is_alive(), "the generate() thread still runs after Stop"


def reply_ids(lm, ids, **settings):
    """The token ids of a whole reply, read from what generate() hands its streamer."""
    seen = []
    model = lm.model
    original = model.generate

    class Recorder:
        def __init__(self, streamer):
            self.streamer, self.first = streamer, True

        def put(self, value):
            if not self.first:
                seen.extend(value.reshape(-1).tolist())
            self.first = False
            self.streamer.put(value)

        def end(self):
            self.streamer.end()

    def generate(*args, streamer=None, **kwargs):
        return original(*args, streamer=Recorder(streamer), **kwargs)

    model.generate = generate
    try:
        list(stream_reply(lm, ids, validate_settings(**settings)))
    finally:
        del model.generate
    return seen


class Ready:
    """A ModelLoader whose model is already loaded (LocalEngine asks only these)."""

    state, name = "ready", "pythia"

    def __init__(self, lm):
        self.lm = lm

    def get(self):
        return self.lm
