"""The llama.cpp CPU engine: a checkpoint written as GGUF (space/gguf.py) and run by llama.cpp's own server
in this process, through the prebuilt `xllamacpp` wheel (no compiler, no HTTP between them).

Why it is here: on a CPU with AVX2 only, llama.cpp's 8- and 4-bit kernels decode 1.4–2× faster than the
OpenVINO engine and this app's torch path (bench/RESULTS.md, issue 18); where AVX-512 makes OpenVINO's
kernels fast, `--cpu-engine auto` keeps OpenVINO (space/model.py decides).

What holds as on the other engines:
- The token ids are dolly.prompt.encode_prompt's: the server is handed ids, never text, so no user text
  becomes a marker. It streams the reply's text (`generate` says why not ids), cut by space/chat.py at a
  marker as on the other engines.
- Replies running at once (`--concurrency`) are llama.cpp's slots, decoded together in one batch.
- Stop ends the reply in the engine: the stream's callback answers True and llama.cpp drops the task.
- Sampling is llama.cpp's (temperature, top-k, top-p, repetition penalty over the prompt and reply, as
  transformers applies it); a seed reproduces a reply on this engine, not the torch path's reply.
"""
from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path

NAME = "llamacpp"
FORMAT_NAMES = {"none": "F16", "int8": "Q8_0", "int4": "Q4_0 (8-bit embedding and head)"}  # space/gguf.QUANT
_SEED_RANGE = 2**32 - 1  # llama.cpp's seeds are 32-bit, and 0xFFFFFFFF means "pick one at random"


def available() -> str | None:
    """None when the engine can run here, else why not (for the status line)."""
    try:
        import gguf  # noqa: F401
        import xllamacpp  # noqa: F401
    except ImportError as error:
        return f"llama.cpp is not installed ({error.name}; pip install -r requirements.txt)"
    return None


def threads() -> int:
    """The cores this process may use (llama.cpp's own default is 4, whatever the machine)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class LlamaCppModel:
    """A GGUF file loaded by llama.cpp, with the part of a transformers model that space/chat.py uses:
    `generate`, `config`, `device`."""

    samples_itself = True  # space/chat.py hands it the sampling settings, not a logits processor

    def __init__(self, path: Path, config, fmt: str, stop_texts: list[str], replies_at_once: int = 2):
        import torch
        import xllamacpp

        self.path, self.config, self.format = Path(path), config, fmt
        self.stop_texts = [text for text in stop_texts if text]
        self.device = torch.device("cpu")
        self.precision = "float32"  # llama.cpp's CPU kernels compute in float32 whatever the weights' format
        self.window = int(getattr(config, "max_position_embeddings", 2048) or 2048)
        params = xllamacpp.CommonParams()
        params.model.path = str(self.path)
        params.n_parallel = max(1, replies_at_once)
        params.kv_unified = False  # each slot its own window: a reply never runs out of room for another's sake
        params.n_ctx = self.window * params.n_parallel
        params.cpuparams.n_threads = params.cpuparams_batch.n_threads = threads()
        params.cache_prompt = False  # a kept prompt could change a reply (different batch shapes): read it each time
        params.cache_ram_mib = 0
        params.ctx_shift = False  # a reply never silently forgets its prompt; space/chat.py fits it to the window
        params.special = True  # special tokens written out, so that replies stop at their text (generate)
        params.verbosity = -1  # errors only: llama.cpp otherwise logs each request
        # The server also listens on a loopback port (xllamacpp starts it): a random key keeps other local users
        # out of it; this process calls it directly, without the key.
        params.api_keys = [secrets.token_urlsafe(32)]
        params.endpoint_slots = params.endpoint_props = params.endpoint_metrics = params.ui = False
        self.server = xllamacpp.Server(params)
        self._lock = threading.Lock()
        self.running = 0  # replies in the engine now (tests)
        # One token at load: the first reply does not pay for llama.cpp's first pass, and once a request has been
        # answered the server's loop runs. (A server let go before its loop had started was never stopped: the
        # loop starts after the constructor returns and overwrote the stop, so the destructor waited forever.)
        self.server.handle_completions({"prompt": [0], "n_predict": 1, "temperature": 0.0, "cache_prompt": False})

    def request(self, ids: list[int], settings, seed: int, max_new_tokens: int, stop: list[str], ignore_eos: bool) -> dict:
        """The server's request for one reply: our ids, llama.cpp's samplers set as transformers' are, ending at the
        texts `stop` or EOS (unless `ignore_eos`: it writes all max_new_tokens, as benchmarks time it)."""
        request = {"prompt": list(ids), "n_predict": max_new_tokens, "stream": True, "stop": list(stop),
                   "cache_prompt": False, "ignore_eos": ignore_eos, "samplers": ["penalties", "temperature", "top_k", "top_p"],
                   "repeat_penalty": settings.repetition_penalty, "repeat_last_n": self.window,
                   "frequency_penalty": 0.0, "presence_penalty": 0.0, "min_p": 0.0, "typical_p": 1.0,
                   "seed": seed % _SEED_RANGE}
        if settings.sampling:
            request.update(temperature=settings.temperature, top_k=settings.top_k, top_p=settings.top_p)
        else:
            request.update(temperature=0.0, top_k=0, top_p=1.0)  # temperature 0: the most likely token
        return request

    def generate(self, inputs, generation_config=None, stopping_criteria=None, streamer=None, sampling=None,
                 seed: int = 0, **unused):
        """What transformers' generate() does for space/chat.py's call, streaming text: the reply's text to
        `streamer.put_text` as llama.cpp sends it, ending at EOS or a marker, at max_new_tokens, or when a
        stopping criterion (Stop) says so. `sampling`: the reply's Settings.

        Text, not token ids: llama.cpp holds back a token that ends inside a UTF-8 character and sends it with
        the next, and its stream names at most that next one's id (and naming it costs 5-15% of the speed).
        The text is our decoding's (tests/test_gguf.py), with the special tokens written out, so llama.cpp
        stops at the text of each of `stop_texts` (EOS and Dolly's markers, the ids the torch path stops at)
        and space/chat.py cuts there as it cuts the torch path's text."""
        config = generation_config
        at_least = config.min_new_tokens or 0
        stopping = list(stopping_criteria or [])
        if streamer is not None:
            streamer.put(inputs.cpu())
        state = {"tokens": 0, "failure": None}

        def on_chunk(chunk) -> bool:
            """True ends the reply (llama.cpp drops the task)."""
            if "error" in chunk:
                error = chunk["error"]
                state["failure"] = error.get("message", error) if isinstance(error, dict) else error
                return True
            choice = (chunk.get("choices") or [{}])[0]
            usage = chunk.get("usage")
            # Each chunk holds one token or more; the last one says how many there were in all.
            state["tokens"] = usage["completion_tokens"] if usage else state["tokens"] + 1
            if streamer is not None and (choice.get("text") or usage):
                streamer.put_text(choice.get("text") or "", state["tokens"])
            return any(bool(c(inputs, None).all()) for c in stopping)

        request = self.request(inputs[0].tolist(), sampling, seed, config.max_new_tokens,
                               stop=[] if at_least else self.stop_texts, ignore_eos=at_least > 0)
        with self._lock:
            self.running += 1
        try:
            answer = self.server.handle_completions(request, on_chunk)
        finally:
            with self._lock:
                self.running -= 1
            if streamer is not None:
                streamer.end()
        if isinstance(answer, dict) and "error" in answer and state["failure"] is None:
            state["failure"] = answer["error"]
        if state["failure"] is not None:
            raise RuntimeError(f"llama.cpp: {state['failure']}")
        return inputs


def load(path: Path, config, fmt: str, tokenizer, replies_at_once: int = 2) -> LlamaCppModel:
    """The GGUF file at `path`, loaded; `tokenizer`: the checkpoint's (the texts of the ids a reply ends at);
    `replies_at_once`: the most replies that may run at once (--concurrency)."""
    from dolly.prompt import stop_token_ids

    stops = [tokenizer.decode([token], skip_special_tokens=False) for token in stop_token_ids(tokenizer)]
    return LlamaCppModel(path, config, fmt, stops, replies_at_once)
