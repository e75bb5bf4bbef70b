"""Watching the app's generate() threads from a test (they run in this process, beside the server)."""
import threading
import time

from space import chat


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
