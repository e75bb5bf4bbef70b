"""The OpenVINO engine's own speed, outside the app: the reference the app's CPU engine is held to (issue 18 §3).

    python bench/openvino_bare.py DIR [--prompt-tokens 128] [--tokens 32] [--repeats 3]

DIR is a converted model (space/convert.py writes them under $DOLLY_CACHE/openvino/ or
~/.cache/huggingface/dolly/openvino/; bench/chat_cpu.py's OpenVINO modes leave them there). The loop is
the runtime alone: one infer request, a 128-token prompt, then greedy decoding by argmax over the last
logits, nothing else (no logits processors, no streamer, no threads). bench/chat_cpu.py's ov-* rows are the
same model through the app's generation path (space/chat.stream_reply); their ratio is the app's overhead.
Also prints which kernels the CPU plugin chose for the linear layers (runtime precision), which shows
whether a CPU cap such as ONEDNN_MAX_CPU_ISA=AVX2 took effect.
"""
import argparse
import collections
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--property", action="append", default=[], metavar="KEY=VALUE",
                        help="an OpenVINO CPU property to compile with (e.g. KV_CACHE_PRECISION=u8), to try one")
    args = parser.parse_args()
    if not (args.folder / "model.xml").is_file():
        parser.error(f"{args.folder} holds no model.xml: give a folder space/convert.py wrote")
    import openvino as ov

    config = json.loads((args.folder / "config.json").read_text())
    properties = {"PERFORMANCE_HINT": "LATENCY"}  # what space/engine_openvino.py compiles with
    for item in args.property:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--property {item!r}: write KEY=VALUE, e.g. KV_CACHE_PRECISION=u8")
        properties[key] = value
    compiled = ov.Core().compile_model(args.folder / "model.xml", "CPU", properties)
    kernels = collections.Counter()
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        if "layerType" in info and info["layerType"].astype(str) in ("FullyConnected", "MatMul"):
            kernels[f"{info['layerType'].astype(str)} {info['runtimePrecision'].astype(str)}"] += 1
    print(f"load average {os.getloadavg()[0]:.1f}; linear layers (runtime precision): {dict(kernels)}")
    heads = config["num_attention_heads"]
    head_size = config["hidden_size"] // heads
    n = args.prompt_tokens
    prefill, decode = [], []
    for _ in range(args.repeats):
        request = compiled.create_infer_request()
        for state in request.query_state():  # an empty cache of batch 1, as the engine starts each reply
            state.state = ov.Tensor(state.state.element_type, ov.Shape([1, heads, 0, head_size]))
        started = time.perf_counter()
        request.infer({"input_ids": np.arange(1000, 1000 + n)[None], "attention_mask": np.ones((1, n), np.int64),
                       "position_ids": np.arange(n)[None]})
        prefill.append(time.perf_counter() - started)
        token, position = int(request.get_tensor("logits").data[0, -1].argmax()), n
        started = time.perf_counter()
        for _ in range(args.tokens):
            request.infer({"input_ids": np.array([[token]]), "attention_mask": np.ones((1, position + 1), np.int64),
                           "position_ids": np.array([[position]])})
            token, position = int(request.get_tensor("logits").data[0, -1].argmax()), position + 1
        decode.append(args.tokens / (time.perf_counter() - started))
    print(f"{args.folder.name}: prefill {n} tokens {statistics.median(prefill) * 1000:.0f} ms, "
          f"decode {statistics.median(decode):.2f} tok/s (median of {args.repeats})")


if __name__ == "__main__":
    main()
