"""The OpenVINO CPU engine: a converted checkpoint (space/convert.py) run by OpenVINO's runtime.

On a CPU, decoding reads every weight once per token; OpenVINO's CPU kernels read 8- and 4-bit weights
near the memory's bandwidth on any x86 CPU (AVX2 included), where PyTorch's weight-only kernels are fast
only with AVX-512 BF16/AMX (issue 18, bench/RESULTS.md).

`OpenVINOModel.generate` takes what space/chat.py hands transformers' generate() (token ids, a
GenerationConfig, logits processors, stopping criteria, a streamer) and does the same with a plain loop:
so the token ids are exactly dolly.prompt.encode_prompt's (the engine never tokenizes), decoding of the
streamed ids stays ours, and seed, temperature, top-p/top-k (space/chat.py's seeded sampler),
repetition penalty, `### End`/EOS and Stop behave as on the torch path. Each reply gets its own infer
request, whose state holds that reply's keys and values: replies at once (--concurrency) never share one.
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
        self._lock = threading.Lock()

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
        request = self._request()
        try:
            feed, start = sequence[0].tolist(), 0
            for _ in range(config.max_new_tokens):
                scores = self.logits(request, feed, start)
                start += len(feed)
                scores = processors(sequence, scores)
                token = int(scores[0].argmax())
                sequence = torch.cat([sequence, torch.tensor([[token]])], dim=1)
                if streamer is not None:
                    streamer.put(torch.tensor([token]))
                if token in eos or any(bool(c(sequence, scores).all()) for c in stopping):
                    break
                feed = [token]
        finally:
            if streamer is not None:
                streamer.end()
        return sequence


def load(folder: Path, fmt: str) -> OpenVINOModel:
    return OpenVINOModel(folder, fmt)
