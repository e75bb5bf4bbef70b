"""The OpenVINO CPU engine: a converted checkpoint (space/convert.py) run by OpenVINO's runtime.

On a CPU, decoding reads every weight once per token; OpenVINO's CPU kernels read 8- and 4-bit weights
near the memory's bandwidth on any x86 CPU (AVX2 included), where PyTorch's weight-only kernels are fast
only with AVX-512 BF16/AMX (issue 18, bench/RESULTS.md).

`OpenVINOModel.generate` takes what space/chat.py hands transformers' generate() (token ids, a
GenerationConfig, logits processors, stopping criteria, a streamer) and does the same with a plain loop:
so the token ids are exactly dolly.prompt.encode_prompt's (the engine never tokenizes), decoding of the
streamed ids stays ours, and seed, temperature, top-p/top-k (space/chat.py's seeded sampler),
repetition penalty, `### End`/EOS and Stop behave as on the torch path. Replies running at once
(--concurrency) are decoded together: each prompt runs alone in its own infer request, then its keys and
values join one batched state (`_Batch`), so a step reads the weights once for all of them; each row is
masked to its own keys, so a reply is the same whoever shares its steps.
"""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch
from transformers import LogitsProcessorList, MinNewTokensLengthLogitsProcessor, PretrainedConfig, \
    RepetitionPenaltyLogitsProcessor

NAME = "openvino"


def available() -> str | None:
    """None when the engine can run here, else why not (for the status line)."""
    try:
        import openvino  # noqa: F401
    except ImportError:
        return "OpenVINO is not installed (pip install -r requirements.txt)"
    return None


class _Row:
    """One reply in the batch: its keys/values until it joins, its length in the cache, the token it
    feeds next and the logits the step gave it."""

    def __init__(self, state: dict, length: int):
        self.state, self.length = state, length
        self.token, self.logits, self.left = None, None, False


class _Batch:
    """Replies running at once, decoded together: one infer request whose state holds every reply's
    keys and values (one row each, left-padded to a common length and masked), so a step reads the
    weights once for all of them. A reply's prompt is run alone in its own request, then its state
    joins the batch; leaving takes its row out. Each row's mask covers only its own keys and its
    positions are its own, so a row's logits do not depend on which others share the step."""

    def __init__(self, compiled):
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.cond = threading.Condition()
        self.rows: list[_Row] = []  # in the batched state, in row order
        self.joining: list[_Row] = []
        self.width = 0  # columns of the batched state
        self.thread = None
        self.steps = 0  # batched steps run, and rows decoded in them (bench/chat_cpu.py --batch reads these)
        self.rows_decoded = 0

    def join(self, state: dict, length: int) -> _Row:
        """A reply whose prompt ran alone (its keys and values in `state`, `length` columns); it joins
        the batch at the step after its first token is fed."""
        row = _Row(state, length)
        with self.cond:
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="dolly-openvino-batch", daemon=True)
                self.thread.start()
            self.joining.append(row)
        return row

    def step(self, row: _Row, token: int) -> np.ndarray:
        """Feed `token` to `row` at the next batched step; its logits."""
        with self.cond:
            row.token = token
            self.cond.notify_all()
            while row.logits is None:
                self.cond.wait()
            logits, row.logits = row.logits, None
        return logits

    def leave(self, row: _Row) -> None:
        with self.cond:
            row.left = True
            self.cond.notify_all()

    def _ready(self) -> bool:
        """A step runs when every row in the batch has fed its token (or left) — a step without a row
        would leave a hole in that row's keys and values — and someone has a token to feed."""
        self.joining = [r for r in self.joining if not r.left]
        staying = [r for r in self.rows if not r.left]
        if not staying and self.rows:
            self.rows, self.width = [], 0
        return all(r.token is not None for r in staying) and \
            bool(staying or any(r.token is not None for r in self.joining))

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self._ready():
                    self.cond.wait()
                leaving = any(r.left for r in self.rows)
                joining = [r for r in self.joining if r.token is not None]
                self.joining = [r for r in self.joining if r.token is None]
                try:
                    if leaving or joining:
                        self._regroup(joining)
                    error = None
                except BaseException as failed:  # no batch to go on with: every row gets the error
                    error, self.rows, self.width = failed, [r for r in self.rows if not r.left] + joining, 0
                rows = list(self.rows)
                feed = [r.token for r in rows]
                for r in rows:
                    r.token = None
                if error is not None:
                    for r in rows:
                        r.logits, r.left = error, True
                    self.rows = []
                    self.cond.notify_all()
                    continue
            try:
                logits = self._infer(rows, feed)
            except BaseException as failed:  # handed to each caller, which raises it in its own thread
                logits = [failed] * len(rows)
            with self.cond:
                for r, row_logits in zip(rows, logits):
                    r.length += 1
                    r.logits = row_logits
                self.width += 1
                self.steps += 1
                self.rows_decoded += len(rows)
                self.cond.notify_all()

    def _regroup(self, joining: list[_Row]) -> None:
        """The batched state for the rows that stay and those that join: each row's own keys and values
        (its last `length` columns), right-aligned in a new common width."""
        import openvino as ov

        staying = [(i, r) for i, r in enumerate(self.rows) if not r.left]
        old = {s.name: np.array(s.state.data, dtype=np.float32) for s in self.request.query_state()} if staying else {}
        self.rows = [r for _, r in staying] + joining
        width = max(r.length for r in self.rows)
        for state in self.request.query_state():
            name = state.name
            sample = old[name] if staying else joining[0].state[name]
            array = np.zeros((len(self.rows), sample.shape[1], width, sample.shape[3]), dtype=np.float32)
            for n, (i, r) in enumerate(staying):
                array[n, :, width - r.length:] = old[name][i, :, old[name].shape[2] - r.length:]
            for n, r in enumerate(joining, start=len(staying)):
                array[n, :, width - r.length:] = r.state[name][0]
            state.state = ov.Tensor(array)
        for r in joining:
            r.state = None
        self.width = width

    def _infer(self, rows: list[_Row], feed: list[int]) -> list[np.ndarray]:
        mask = np.zeros((len(rows), self.width + 1), dtype=np.int64)
        for n, r in enumerate(rows):
            mask[n, self.width - r.length:] = 1
        self.request.infer({"input_ids": np.array(feed, dtype=np.int64)[:, None],
                            "attention_mask": mask,
                            "position_ids": np.array([[r.length] for r in rows], dtype=np.int64)})
        logits = self.request.get_tensor("logits").data[:, -1, :]
        return [logits[n:n + 1].astype(np.float32, copy=True) for n in range(len(rows))]


def release_mapped(path: Path) -> int:
    """Give back the resident pages of this process's read-only mappings of `path` (madvise
    MADV_DONTNEED); returns how many bytes of mappings it advised. Safe for a read-only file mapping:
    a page read again is read back from the file. Linux only; elsewhere, or on any failure, nothing."""
    import ctypes
    import os

    target, advised = os.path.realpath(path), 0
    try:
        with open("/proc/self/maps") as maps:
            regions = [line.split(maxsplit=5) for line in maps]
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    except (OSError, AttributeError):
        return 0
    for parts in regions:
        if len(parts) == 6 and parts[5].strip() == target and "w" not in parts[1]:
            start, end = (int(x, 16) for x in parts[0].split("-"))
            if libc.madvise(start, end - start, 4) == 0:  # 4: MADV_DONTNEED
                advised += end - start
    return advised


class OpenVINOModel:
    """A converted model, compiled for the CPU, with the part of a transformers model that
    space/chat.py uses: `generate`, `config`, `device`."""

    device = torch.device("cpu")

    def __init__(self, folder: Path, fmt: str):
        import openvino as ov

        self.folder, self.format = Path(folder), fmt
        self.config = PretrainedConfig.from_json_file(str(self.folder / "config.json"))
        core = ov.Core()
        properties = {"PERFORMANCE_HINT": "LATENCY"}
        if fmt == "none":
            # The checkpoint's own precision, exactly: float32 arithmetic and keys/values, as the torch
            # path computes on a CPU. (8/4-bit formats let OpenVINO pick, bf16 where the CPU has it.)
            properties.update({"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"})
        self.compiled = core.compile_model(self.folder / "model.xml", "CPU", properties)
        precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self.precision = {"bf16": "bfloat16", "f32": "float32", "f16": "float16"}.get(precision, precision)
        self._warm_up()
        self.batch = _Batch(self.compiled)

    def _warm_up(self) -> None:
        """One token through the model at load, giving back the memory-mapped model.bin's pages meanwhile.
        OpenVINO maps model.bin, and on the first inference the CPU plugin repacks every weight into buffers
        of its own and never reads the mapping again: left alone, the weights stay resident twice (the 2.8b
        shape in int8: 5.8 GB against 3.0, bench/RESULTS.md). Given back while the repack runs, they are
        never resident twice, so the peak stays near one copy too."""
        stop = threading.Event()

        def give_back():
            while not stop.wait(0.02):
                release_mapped(self.folder / "model.bin")

        thread = threading.Thread(target=give_back, name="dolly-openvino-warm-up", daemon=True)
        thread.start()
        try:
            self.logits(self._request(), [0], 0)
        finally:
            stop.set()
            thread.join()
        release_mapped(self.folder / "model.bin")

    def _request(self):
        """A fresh infer request with empty state for one reply, batch of one."""
        import openvino as ov

        request = self.compiled.create_infer_request()
        heads = self.config.num_attention_heads
        shape = ov.Shape([1, heads, 0, self.config.hidden_size // heads])
        for state in request.query_state():  # its initial value has batch 0: start from an empty cache of batch 1
            state.state = ov.Tensor(state.state.element_type, shape)
        return request

    def logits(self, request, ids: list[int], start: int) -> torch.Tensor:
        """Run `ids` at positions start… through the model (its state grows by them); the last one's logits."""
        n = len(ids)
        request.infer({"input_ids": np.array([ids], dtype=np.int64),
                       "attention_mask": np.ones((1, start + n), dtype=np.int64),
                       "position_ids": np.arange(start, start + n, dtype=np.int64)[None]})
        return torch.from_numpy(request.get_tensor("logits").data[:, -1, :].astype(np.float32, copy=True))

    def step(self, row: _Row, token: int) -> torch.Tensor:
        """Decode `token` for `row` in the next batched step, beside whatever other replies run; its logits."""
        logits = self.batch.step(row, token)
        if isinstance(logits, BaseException):
            raise logits
        return torch.from_numpy(logits)

    def generate(self, inputs: torch.Tensor, attention_mask=None, generation_config=None, logits_processor=None,
                 stopping_criteria=None, streamer=None, **unused):
        """What transformers' generate() does for space/chat.py's call (greedy over the processed scores,
        which the seeded sampler has narrowed to one token when sampling), on this engine."""
        config = generation_config
        processors = LogitsProcessorList()
        if config.repetition_penalty is not None and config.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(config.repetition_penalty))
        eos = config.eos_token_id
        eos = set([eos] if isinstance(eos, int) else (eos or []))
        if config.min_new_tokens:
            processors.append(MinNewTokensLengthLogitsProcessor(inputs.shape[1], config.min_new_tokens, sorted(eos)))
        processors.extend(logits_processor or [])
        stopping = list(stopping_criteria or [])
        sequence = inputs.clone()
        if streamer is not None:
            streamer.put(sequence.cpu())
        row = None
        try:
            request = self._request()
            scores = self.logits(request, sequence[0].tolist(), 0)  # the prompt, alone in its own request
            state = {s.name: np.array(s.state.data, dtype=np.float32) for s in request.query_state()}
            del request
            for step in range(config.max_new_tokens):
                if step:
                    scores = self.step(row, token)
                scores = processors(sequence, scores)
                token = int(scores[0].argmax())
                sequence = torch.cat([sequence, torch.tensor([[token]])], dim=1)
                if streamer is not None:
                    streamer.put(torch.tensor([token]))
                if token in eos or any(bool(c(sequence, scores).all()) for c in stopping):
                    break
                if row is None:
                    row = self.batch.join(state, sequence.shape[1] - 1)
                    state = None
        finally:
            if row is not None:
                self.batch.leave(row)
            if streamer is not None:
                streamer.end()
        return sequence


def load(folder: Path, fmt: str) -> OpenVINOModel:
    return OpenVINOModel(folder, fmt)
