"""llama.cpp from the package index: a prebuilt wheel (xllamacpp) on GGUFs this project writes (space/gguf.py).

    pip install xllamacpp==2026.10.11549
    python bench/llamacpp_wheel.py --shapes 1b                       # int8 (Q8_0) and int4 (Q4_0)
    python bench/llamacpp_wheel.py --shapes 1b --llama-bench llama.cpp/build/bin/llama-bench   # + a native build

Issue 18 weighed llama.cpp as the CPU engine and found it had to be compiled (~23 min here) and its converter
could not read a transformers-5 checkpoint. This bench measures what a prebuilt wheel gives instead, the way
`bench/chat_cpu.py --batch` measures this app's OpenVINO engine: for each shape (random init, Pythia's shapes,
the real tokenizer, saved once under --cache-dir) and format, in one process of llama.cpp's server
(`n_parallel` 4, one slot a reply):
  - the GGUF is written by space/gguf.py (its time; kept beside the shape and reused: delete it after changing
    space/gguf.py);
  - decode tokens/s of 1 reply and of 4 at once (greedy, every reply forced to --tokens new tokens):
    n * (tokens - 1) / (time for `tokens` tokens - time for 1), median of --repeats, as chat_cpu's --batch;
  - prefill: the server's own prompt time for a --prompt-tokens prompt;
  - whether each of the 4 replies read together is the same text as that request alone.
With --llama-bench BIN, a native llama.cpp build's `llama-bench` on the same GGUF runs right after, so the
wheel's portable kernels are compared with a build for this CPU in the same minutes.
Quality per format (KL divergence from float32, greedy agreement) is bench/chat_cpu.py's: `--quality DIR
--quality-modes cpp-none,cpp-int8,cpp-int4`, and `--quality-gguf LABEL=FILE` for a GGUF made elsewhere.
"""
import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.chat_cpu import cpu_flags, cpu_model, llama_bench, prompt_ids, save_shape  # noqa: E402
from space import gguf  # noqa: E402


def write_gguf(model: Path, fmt: str) -> tuple[Path, float]:
    out = model.parent / f"{model.name}-{gguf.QUANT[fmt]}.gguf"
    start = time.perf_counter()
    if not out.exists():
        gguf.write(model, out, fmt)
    return out, time.perf_counter() - start


def measure(path: Path, prompts: list[list[int]], tokens: int, repeats: int) -> dict:
    import xllamacpp as xlc

    params = xlc.CommonParams()
    params.model.path = str(path)
    params.n_parallel = len(prompts)
    params.n_ctx = len(prompts) * (max(map(len, prompts)) + tokens + 16)
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = os.cpu_count()
    server = xlc.Server(params)

    def ask(prompt, n, out, i):
        out[i] = server.handle_completions({"prompt": prompt, "n_predict": n, "temperature": 0, "ignore_eos": True,
                                            "cache_prompt": False})

    def replies(count: int, n: int) -> tuple[float, list]:
        out = [None] * count
        threads = [threading.Thread(target=ask, args=(prompts[i], n, out, i)) for i in range(count)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - start, out

    replies(1, 4)  # warm up
    rates, prefill = {}, []
    for count in (1, len(prompts)):
        runs = []
        for _ in range(repeats):
            full, out = replies(count, tokens)
            first, _ = replies(count, 1)
            runs.append(count * (tokens - 1) / max(full - first, 1e-9))
            if count == 1:
                prefill.append(out[0]["timings"]["prompt_ms"])
        rates[count] = statistics.median(runs)
    alone = []
    for prompt in prompts:
        out = [None]
        ask(prompt, tokens, out, 0)
        alone.append(out[0]["choices"][0]["text"])
    _, together = replies(len(prompts), tokens)
    same = sum(t["choices"][0]["text"] == a for t, a in zip(together, alone))
    return {"one_tps": rates[1], "many_tps": rates[len(prompts)], "prefill_ms": statistics.median(prefill),
            "identical": same}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="1b")
    parser.add_argument("--formats", default="int8,int4", help="of space/gguf.py: none (F16), int8 (Q8_0), int4 (Q4_0)")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache-dir", default="/tmp/dolly-bench-models")
    parser.add_argument("--llama-bench", metavar="BIN", help="a native llama.cpp build's llama-bench, in the same run")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    import xllamacpp

    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, flags: {cpu_flags()}; xllamacpp {xllamacpp.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    print("\n| shape | format | GGUF written (s) | prefill (ms) | 1 reply tok/s | 4 at once tok/s | 4 / 1 "
          "| identical to alone | native llama-bench tok/s, prefill ms | wheel / native |\n|---|---|---|---|---|---|---|---|---|---|")
    for shape in [s for s in args.shapes.split(",") if s]:
        model = save_shape(shape, Path(args.cache_dir))
        tokenizer = AutoTokenizer.from_pretrained(model)
        prompts = [prompt_ids(tokenizer, i, args.prompt_tokens) for i in range(4)]
        for fmt in [f for f in args.formats.split(",") if f]:
            path, wrote = write_gguf(model, fmt)
            r = measure(path, prompts, args.tokens, args.repeats)
            native, ratio = "", ""
            if args.llama_bench:
                n = llama_bench(args.llama_bench, str(path), args)
                native, ratio = f"{n['decode_tps']:.2f}, {n['prefill_ms']:.0f}", f"{r['one_tps'] / n['decode_tps']:.2f}x"
            print(f"| {shape} | {fmt} ({gguf.QUANT[fmt]}) | {wrote:.0f} | {r['prefill_ms']:.0f} | {r['one_tps']:.2f} | "
                  f"{r['many_tps']:.2f} | {r['many_tps'] / r['one_tps']:.2f}x | {r['identical']}/4 | {native} | {ratio} |",
                  flush=True)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
