"""Hugging Face ZeroGPU Spaces: a GPU is lent to the app only inside functions wrapped in `spaces.GPU`.

On such a Space (`SPACES_ZERO_GPU=true`, the variable the `spaces` package itself reads, and
`spaces` installed, which ZeroGPU Spaces are), generation runs inside `spaces.GPU`: ZeroGPU forks a
worker that holds the GPU, runs the generator there and sends back what it yields. Its arguments
travel pickled, so the model goes by a key into a table the fork inherits, and a threading.Event
cannot be sent: the caller's Stop closes the worker's generator instead. The model is placed on
"cuda" at start-up, before the app launches (ZeroGPU moves those tensors to the GPU it lends).

Anywhere else nothing here imports `spaces` or changes anything: `ACTIVE` is False.
"""
import importlib.util
import os

from dolly.settings import setting

# The rule of `spaces.config`: these values switch ZeroGPU on.
ZERO_GPU_ENV = "SPACES_ZERO_GPU"
# What one reply may hold the GPU for; ZeroGPU counts it against the visitor's quota before it starts.
GPU_SECONDS = setting("DOLLY_ZERO_GPU_SECONDS")


def detect(environ=None) -> bool:
    """True on a ZeroGPU Space: SPACES_ZERO_GPU is true and the `spaces` package is installed."""
    environ = os.environ if environ is None else environ
    on = str(environ.get(ZERO_GPU_ENV, "")).strip().lower() in ("1", "t", "true")
    return on and importlib.util.find_spec("spaces") is not None


ACTIVE = detect()
_models: dict = {}  # id(model) -> LoadedModel: the forked GPU worker finds the model here
_in_worker = False


def _generate(fn, key, args):
    """Runs in ZeroGPU's worker: the generation, then one last item with its usage numbers."""
    global _in_worker
    _in_worker = True
    usage = {}
    for text in fn(_models[key], *args, usage=usage):
        yield text, None
    yield None, usage


_generate_on_gpu = None
if ACTIVE:
    import spaces  # patches torch; it must be imported before anything starts CUDA

    _generate_on_gpu = spaces.GPU(duration=GPU_SECONDS)(_generate)


def runs_here() -> bool:
    """Whether generation may run in this process as it is (not a ZeroGPU Space, or already inside
    its GPU worker)."""
    return not ACTIVE or _in_worker


def stream(fn, lm, input_ids, settings, stop=None, min_new_tokens: int = 0, usage: dict | None = None, gpu=None):
    """Yield what `fn(lm, input_ids, settings, None, min_new_tokens, usage=...)` yields, run inside
    `spaces.GPU` (or `gpu`, what wraps it: tests pass `spaces.GPU` as it is off ZeroGPU, which
    runs the function as it is). `fn` must be a module-level function: it is pickled by name.
    Setting `stop` ends the worker's generation at its next token."""
    _models[id(lm)] = lm
    results = (gpu or _generate_on_gpu)(fn, id(lm), (list(input_ids), settings, None, min_new_tokens))
    try:
        for text, final_usage in results:
            if stop is not None and stop.is_set():
                break
            if text is None:
                if usage is not None:
                    usage.update(final_usage)
            else:
                yield text
    finally:
        results.close()  # ZeroGPU then stops the worker's generator, which ends generate()
