"""CPU chat speed by weight format: how fast does a Dolly-sized model answer on this machine?

    python bench/chat_cpu.py                       # pythia-1b and -2.8b shapes, fp32 bf16 int8 int4, /chat
    python bench/chat_cpu.py --shapes 2.8b --modes int8,bf16 --tokens 32 --no-app
    python bench/chat_cpu.py --shapes '' --no-app --no-kernels --quality DIR   # only: quality per format vs fp32
    python bench/chat_cpu.py --batch --shapes 1b   # only: 1 vs 4 replies at once on the OpenVINO engine
    python bench/chat_cpu.py --batch --shapes 1b --llama-batched-bench llama.cpp/build/bin/llama-batched-bench \
        --gguf 1b:Q8_0=q8.gguf                     # the same, and llama.cpp's own batching in the same run
    python bench/chat_cpu.py --app-concurrency --shapes 1b --app-tokens 64   # only: the same through /chat, a real app
    python bench/chat_cpu.py --conversion int8 --shapes 2.8b   # only: conversion time and peak RSS, per stage
    python bench/chat_cpu.py --shapes 1b --modes ov-int8,ov-int4 --no-app --no-kernels \
        --llama-bench llama.cpp/build/bin/llama-bench --gguf 1b:Q8_0=q8.gguf --gguf 1b:Q4_K_M=q4km.gguf

For each shape (random init with Pythia's real shapes, the real GPT-NeoX tokenizer from
../shared/data/pythia-tokenizer, saved once in bf16 under --cache-dir) and each mode, a fresh process
loads the model through the app's own loader (space/model.load_model) and measures:
  - prefill: one forward pass over a 128-token prompt (ms, median of --repeats);
  - decode tokens/s through the app's generation path (space/chat.stream_reply, greedy, forced to
    --tokens new tokens): (N - 1) / (time for N tokens - time for 1 token);
  - peak RSS of that process (loading included) against the target 1.5 x weight bytes + 1 GB, where
    weight bytes are the checkpoint's (bf16) bytes, the form the quantized modes load from;
  - the bandwidth bound: bytes read per decoded token (every weight and buffer except the input
    embedding, of which a token reads one row) / the machine's read bandwidth, measured in this run.
Modes: fp32 (--dtype float32 --quantize none: the old CPU default), bf16 (--dtype bfloat16 --quantize
none), int8 and int4 (--quantize int8/int4; bf16 activations where the CPU has native bf16).
ov-int8 / ov-int4 / ov-none: the OpenVINO engine (--cpu-engine openvino); ov-int8-solo: its default
loaded for one reply at a time (--concurrency 1: no placeholder row, space/engine_openvino._Batch._infer).
cpp-int8 / cpp-int4 / cpp-none: the llama.cpp engine (--cpu-engine llamacpp: Q8_0, Q4_0 with an 8-bit embedding
and head, F16), whose prefill is timed as a reply of one token to a prompt it has not read.
The app row: a real `python app.py` per mode on the 1b shape, answering /chat through gradio_client
(default CPU mode vs `--dtype float32 --quantize none`).
--quality DIR (a model `python -m train` wrote): per mode of --quality-modes (OpenVINO's ov-none/ov-int8/
ov-int4 included, loaded as the app loads them), against the full-precision torch model (fp32): eval loss on
held-out dolly-shaped records (tests/dolly_data, another seed) and its delta, mean KL divergence from fp32
per token and top-1 agreement under teacher forcing (OpenVINO: one token at a time through its stateful
request, since the converted model returns only the last position's logits; llama.cpp's cpp-none/cpp-int8/
cpp-int4: its server lists the whole vocabulary's log-probabilities for one position a request, so 8 positions
of each record are scored, and the reference on the same ones), and how many of 16 replies of 32 greedy tokens
are identical to fp32's. --quality-gguf LABEL=FILE adds a GGUF of that model made elsewhere (llama.cpp's
llama-quantize Q4_K_M, say), run by the llama.cpp engine.

--llama-bench BIN --gguf SHAPE:FORMAT=FILE (repeatable): the reference engine in the same run, right after
the shape's modes: llama.cpp's own `llama-bench` on a GGUF of the same shape (prompt of --prompt-tokens,
--tokens new tokens, --repeats, one thread a CPU), and the ratio of each OpenVINO mode to it (issue 18
section 3: the default >= 0.9x Q8_0, the 4-bit mode >= 0.9x Q4_K_M). bench/RESULTS.md says how the GGUFs
were made (llama.cpp's convert_hf_to_gguf.py, then llama-quantize).

Targets (this issue): 2.8b shape >= 8 tokens/s decode in the default CPU mode and >= 50% of its
bandwidth bound; peak RSS <= 1.5 x weight bytes + 1 GB; /chat default >= 3x fp32 on the 1b shape.
"""
import argparse
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.chat import off_main_thread as in_thread  # noqa: E402  (as Gradio runs handlers: in a worker thread)
from dolly.prompt import format_prompt  # noqa: E402

SHAPES = {  # EleutherAI's configs: hidden, layers, heads, vocab (padded)
    "1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=8),
    "2.8b": dict(hidden_size=2560, num_hidden_layers=32, num_attention_heads=32),
}
MODES = {  # name -> (--dtype, --quantize, --cpu-engine)
    "fp32": ("float32", "none", "torch"),
    "bf16": ("bfloat16", "none", "torch"),
    "int8": ("auto", "int8", "torch"),
    "int4": ("auto", "int4", "torch"),
    "ov-int8": ("auto", "int8", "openvino"),  # the OpenVINO engine (space/engine_openvino.py): --cpu-engine auto's
    "ov-int4": ("auto", "int4", "openvino"),
    "ov-none": ("auto", "none", "openvino"),
    "ov-int8-solo": ("auto", "int8", "openvino"),  # the default with --concurrency 1: no placeholder row
    "cpp-int8": ("auto", "int8", "llamacpp"),  # the llama.cpp engine (space/engine_llamacpp.py): auto's without AVX-512
    "cpp-int4": ("auto", "int4", "llamacpp"),
    "cpp-none": ("auto", "none", "llamacpp"),
    "cpp-int8-solo": ("auto", "int8", "llamacpp"),  # --concurrency 1: one slot, one window of keys and values
    # The torch path where the CPU has no native bf16 (run with --emulate-avx2 to see it on a CPU that has):
    "int8-f32": ("float32", "int8", "torch"),  # the old --quantize auto there: int8 weights, float32 activations
    "int8-bf16dec": ("float32", "int8", "torch"),  # auto there now: float32, the int8 layers decoding in bf16
    "int4-bf16dec": ("float32", "int4", "torch"),
}
DECODE_BF16 = {"int8-bf16dec", "int4-bf16dec"}  # space/quantize.decode_in, as load_model applies it there
SOLO = {"ov-int8-solo", "cpp-int8-solo"}  # loaded for one reply at a time (space/engine_openvino._Batch.company)
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}  # PyTorch's and oneDNN's kernels, not OpenVINO's
CONTEXT = ("Community gardens turn empty city lots into shared plots where neighbours grow vegetables and flowers. "
           "Besides food, they offer shade, a place to meet, and lessons for schoolchildren about where food comes "
           "from. Cities that support them often see less litter and more people outdoors in the evenings. ") * 4
GB = 1e9


def prompt_ids(tokenizer, take: int, tokens: int) -> list[int]:
    """A Dolly prompt of `tokens` token ids, another for each `take`. Its head, where the instruction names the take:
    the OpenVINO engine keeps the prompts it has read, so the same ids again would be restored, not read, and
    Dolly prompts of the same passage cut to their tail would all be the same ids."""
    ids = tokenizer.encode(format_prompt(f"Summarize the passage, take {take}.", CONTEXT), add_special_tokens=False)
    return ids[:tokens]


def cpu_model() -> str:
    """lscpu's model name (what bench/RESULTS.md records), or what Python knows."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, StopIteration, subprocess.SubprocessError):
        return platform.processor() or platform.machine()


def cpu_flags() -> str:
    """The CPU's flags that decide which kernels are fast: AVX2, AVX-512 (and its BF16/VNNI), AMX."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return " ".join(f for f in wanted if f in flags) or "none of avx2/avx512/amx"


def read_bandwidth(size_bytes: int = 1 << 30, repeats: int = 5) -> float:
    """Bytes/s of the fastest multi-threaded read of a 1 GiB buffer (best of `repeats`): what decoding
    a token does to the weights. The read is a float32 matrix-vector product (MKL's sgemv streams at the
    memory's rate; a plain x.sum() measured ~25% lower here, and fp32 decoding then beat its "bound")."""
    import torch

    x = torch.ones(size_bytes // 4, dtype=torch.float32)
    matrix = x.view(16384, -1)
    vector = torch.ones(matrix.shape[1])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mv(matrix, vector)
        best = min(best, time.perf_counter() - start)
    del x, matrix
    return size_bytes / best


def kernels(repeats: int = 20) -> list:
    """One 2560x10240 linear (pythia-2.8b's MLP) at 1 row (a decoded token) and 128 rows (a prompt):
    bf16 F.linear, torchao's Int8WeightOnlyConfig, and this app's Int8Linear / Int4Linear."""
    import torch
    from torch import nn

    from space.quantize import Int4Linear, Int8Linear

    torch.manual_seed(0)
    base = nn.Linear(2560, 10240, bias=False).to(torch.bfloat16)
    layers = {"bf16 F.linear": base, "int8 (space/quantize.py)": Int8Linear(base),
              "int4 (space/quantize.py)": Int4Linear(base, 128)}
    try:
        import copy

        from torchao.quantization import Int8WeightOnlyConfig, quantize_

        ao = copy.deepcopy(base)
        quantize_(ao, Int8WeightOnlyConfig())
        layers["torchao 0.18 Int8WeightOnlyConfig"] = ao
    except Exception as error:  # torchao is optional here: only the comparison needs it
        print(f"(torchao not measured: {type(error).__name__}: {error})")
    rows = []
    with torch.inference_mode():
        for rows_in in (1, 128):
            x = torch.randn(rows_in, 2560, dtype=torch.bfloat16)
            for name, layer in layers.items():
                layer(x)
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    layer(x)
                    times.append(time.perf_counter() - start)
                rows.append((rows_in, name, statistics.median(times) * 1000))
    return rows


def save_shape(shape: str, cache: Path) -> Path:
    """A random-init model with `shape`'s real dimensions and Dolly's tokenizer, saved in bf16 (once)."""
    path = cache / f"pythia-{shape}-shaped"
    if (path / "config.json").exists():
        return path
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from dolly.prompt import add_special_tokens
    from tests.tiny_model import pythia_tokenizer

    tokenizer = pythia_tokenizer()
    if tokenizer is None:
        raise SystemExit("The real Pythia tokenizer is not at ../shared/data/pythia-tokenizer; this bench needs it.")
    add_special_tokens(tokenizer)
    dims = SHAPES[shape]
    config = GPTNeoXConfig(vocab_size=50304, intermediate_size=4 * dims["hidden_size"], max_position_embeddings=2048,
                           rotary_pct=0.25, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           tie_word_embeddings=False, **dims)
    print(f"saving a random-init pythia-{shape}-shaped model to {path} (once) ...", flush=True)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # never a float32 copy: 2.8b is 11 GB in fp32
    model = GPTNeoXForCausalLM(config)
    torch.set_default_dtype(torch.float32)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    del model
    return path


def peak_rss() -> int:
    """This process's peak resident memory in bytes: VmHWM, the high-water mark of its own memory map.
    (Not getrusage's ru_maxrss: Linux carries that over from the parent across fork and exec, so a
    worker started by a parent that built a 2.8b model would report the parent's peak.)"""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # not Linux: the best there is


def decode_bytes(model) -> int:
    """Bytes read per decoded token: every parameter and buffer once, but only one row of the input
    embedding (tied weights counted once)."""
    embed = model.get_input_embeddings().weight
    seen, total = {embed.data_ptr()}, embed[0].numel() * embed.element_size()
    for t in list(model.parameters()) + [b for b in model.buffers() if b is not None]:
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def ov_decode_bytes(model) -> int:
    """The OpenVINO model's weight file, less the input embedding's rows a token does not read."""
    weights = (model.folder / "model.bin").stat().st_size
    config = model.config
    embedding = config.vocab_size * config.hidden_size  # at most one byte per weight when compressed (int8)
    return weights - (embedding * 2 if model.format == "none" else embedding)


def worker(args) -> None:
    """One mode in a fresh process; prints one JSON line."""
    import torch

    from space.chat import stream_reply, validate_settings
    from space.model import load_model

    dtype, quantize, engine = MODES[args.worker]
    start = time.perf_counter()
    # Loaded in a thread that then ends, as the app's ModelLoader does: a thread that ran torch's parallel
    # ops keeps an OpenMP pool, and with more pool threads than cores GNU OpenMP stops spinning between
    # parallel regions: decoding in another thread (as the app does) then ran 15% slower.
    lm = in_thread(lambda: load_model(args.model, device="cpu", dtype=dtype, quantize=quantize, cpu_engine=engine,
                                      replies_at_once=1 if args.worker in SOLO else 2))
    if args.worker in DECODE_BF16:
        from space.quantize import decode_in

        decode_in(lm.model, torch.bfloat16)
        lm.decode_dtype = "bfloat16"
    load_s = time.perf_counter() - start
    rss_load = peak_rss()
    ids = prompt_ids(lm.tokenizer, 0, args.prompt_tokens)
    inputs = torch.tensor([ids])
    takes = itertools.count(1)  # prefill's prompts: 1, 2, ... (0 is the decode's)

    def prefill():
        if lm.engine == "llamacpp":  # a reply of one token: the prompt's reading and one sampled token
            fresh = prompt_ids(lm.tokenizer, next(takes), args.prompt_tokens)
            t = time.perf_counter()
            for _ in stream_reply(lm, fresh, validate_settings(do_sample=False, max_new_tokens=1), min_new_tokens=1):
                pass
            return time.perf_counter() - t
        if lm.engine == "openvino":  # a new reply: a prompt it has not read yet
            fresh = prompt_ids(lm.tokenizer, next(takes), args.prompt_tokens)
            t = time.perf_counter()
            row, _ = lm.model.start(fresh)
            elapsed = time.perf_counter() - t
            lm.model.batch.leave(row)
            return elapsed
        with torch.inference_mode():
            t = time.perf_counter()
            lm.model(input_ids=inputs, use_cache=True)
            return time.perf_counter() - t

    def reply(n):
        settings = validate_settings(do_sample=False, max_new_tokens=n)
        t = time.perf_counter()
        for _ in stream_reply(lm, ids, settings, min_new_tokens=n):
            pass
        return time.perf_counter() - t

    in_thread(prefill), in_thread(lambda: reply(4))  # warm-up
    prefills, decodes = [], []
    for _ in range(args.repeats):
        prefills.append(in_thread(prefill))
        one = in_thread(lambda: reply(1))
        full = in_thread(lambda: reply(args.tokens))
        decodes.append((args.tokens - 1) / max(full - one, 1e-9))
    print(json.dumps(dict(
        mode=args.worker, model_mode=lm.mode, load_s=load_s, prefill_ms=statistics.median(prefills) * 1000,
        decode_tps=statistics.median(decodes), decode_all=decodes,
        decode_bytes=(ov_decode_bytes(lm.model) if lm.engine == "openvino" else
                      gguf_decode_bytes(lm.model) if lm.engine == "llamacpp" else decode_bytes(lm.model)),
        load_stage=lm.why,
        rss_load=rss_load, rss_peak=peak_rss(),
        threads=torch.get_num_threads())), flush=True)


def batch_worker(args) -> None:
    """--batch: the OpenVINO engine's decode tokens/s with 1 reply and with 4 at once (threads, as the
    app runs them, greedy, forced to --tokens new tokens each); prints one JSON line."""
    import threading

    from space.chat import stream_reply, validate_settings
    from space.model import load_model

    dtype, quantize, engine = MODES["ov-int8"]
    lm = in_thread(lambda: load_model(args.model, device="cpu", dtype=dtype, quantize=quantize, cpu_engine=engine))
    prompts = [prompt_ids(lm.tokenizer, i, args.prompt_tokens) for i in range(4)]
    settings = validate_settings(do_sample=False, max_new_tokens=args.tokens)

    def replies(n: int, tokens: int) -> float:
        """Seconds for n replies of `tokens` tokens started together."""
        chosen = validate_settings(do_sample=False, max_new_tokens=tokens)
        threads = [threading.Thread(target=lambda i=i: [None for _ in stream_reply(lm, prompts[i], chosen, min_new_tokens=tokens)])
                   for i in range(n)]
        t = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - t

    replies(1, 4)
    rates = {}
    for n in (1, 4):
        runs = []
        for _ in range(args.repeats):
            # Decode only: the time for `tokens` tokens less the time for 1 (the prompts' prefill).
            runs.append(n * (args.tokens - 1) / max(replies(n, args.tokens) - replies(n, 1), 1e-9))
        rates[n] = statistics.median(runs)
    del settings
    print(json.dumps(dict(one_tps=rates[1], four_tps=rates[4], ratio=rates[4] / rates[1], model_mode=lm.mode,
                          steps=lm.model.batch.steps, rows=lm.model.batch.rows_decoded, load=os.getloadavg())), flush=True)


def memory_available() -> int:
    """The machine's MemAvailable in bytes (what the kernel can give before it must kill something)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 1 << 62


def run_guarded(cmd: list, env: dict, min_available: float, timeout: float = 3600) -> tuple[str, str]:
    """Run `cmd` (a worker) and return its (stdout, stderr); kill it, and say so, if this machine's
    available memory drops under `min_available` GiB, so a 2.8b conversion never gets other people's
    processes OOM-killed on a shared machine. The lowest MemAvailable seen is printed."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        lowest, start, killed = memory_available(), time.time(), None
        while proc.poll() is None:
            available = memory_available()
            lowest = min(lowest, available)
            if available < min_available * 2**30 or time.time() - start > timeout:
                proc.kill()
                killed = (f"available memory {available / 2**30:.1f} GiB < {min_available} GiB"
                          if available < min_available * 2**30 else f"over {timeout:.0f} s")
            time.sleep(0.2)
        out.seek(0), err.seek(0)
        stdout, stderr = out.read(), err.read()
    print(f"(lowest available memory while it ran: {lowest / 2**30:.1f} GiB)", flush=True)
    if killed:
        raise SystemExit(f"worker {cmd[3:5]} KILLED by the memory guard: {killed}\n{stdout[-3000:]}\n{stderr[-2000:]}")
    return stdout, stderr


def conversion_worker(args) -> None:
    """--conversion: convert the checkpoint for OpenVINO in --quantize-format (space/convert.convert, as
    the app's first start does) into a fresh cache; prints one JSON line with the time, the peak RSS, and
    the peak reached by the end of each stage (VmHWM when the next stage starts: which stage sets it)."""
    from space.convert import convert

    stages, start = [], time.perf_counter()

    def on_stage(stage: str) -> None:
        stages.append(dict(stage=stage, at_s=time.perf_counter() - start, peak_before=peak_rss(), rss=rss_now()))
        print(f"  {time.perf_counter() - start:6.0f} s  peak so far {peak_rss() / GB:5.2f} GB  now {rss_now() / GB:5.2f} GB  "
              f"-> {stage}", flush=True)

    folder = in_thread(lambda: convert(Path(args.model), args.worker.split(":", 1)[1], on_stage=on_stage))
    size = sum(f.stat().st_size for f in Path(folder).iterdir())
    print(json.dumps(dict(seconds=time.perf_counter() - start, rss_peak=peak_rss(), stages=stages, bytes=size,
                          folder=str(folder))), flush=True)


def rss_now() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def llama_bench(binary: str, gguf: str, args) -> dict:
    """llama.cpp's `llama-bench` on `gguf`: decode tok/s (mean, and its spread) and the prompt's ms. The decode is
    timed after a prompt of --prompt-tokens (`-d`), as this bench times the app's modes: from an empty context,
    llama-bench's default, llama.cpp decoded 6-10% faster here (attention over fewer keys), which flattered it."""
    cmd = [binary, "-m", gguf, "-p", str(args.prompt_tokens), "-n", str(args.tokens), "-d", f"0,{args.prompt_tokens}",
           "-r", str(args.repeats), "-t", str(os.cpu_count()), "-o", "json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    if out.returncode:
        raise SystemExit(f"llama-bench failed ({' '.join(cmd)}):\n{out.stderr[-2000:]}")
    runs = json.loads(out.stdout)
    decode = next(r for r in runs if r["n_gen"] > 0 and r.get("n_depth", 0) == args.prompt_tokens)
    prompt = next(r for r in runs if r["n_prompt"] > 0 and r.get("n_depth", 0) == 0)
    return {"decode_tps": decode["avg_ts"], "decode_sd": decode["stddev_ts"], "prefill_ms": 1000 * args.prompt_tokens / prompt["avg_ts"],
            "build": f"{decode.get('build_commit', '?')}, {decode.get('cpu_info', '')}".strip(", ")}


def llama_batched(binary: str, gguf: str, args, together: int = 4) -> dict:
    """llama.cpp's `llama-batched-bench` on `gguf`: decode tok/s in all of 1 sequence and of `together` decoded in
    one batch (each its own --prompt-tokens prompt, --tokens new tokens, one KV cache for all), median of --repeats."""
    context = together * (args.prompt_tokens + args.tokens) + 64
    cmd = [binary, "-m", gguf, "-c", str(context), "-npp", str(args.prompt_tokens), "-ntg", str(args.tokens),
           "-npl", f"1,{together}", "-kvu", "-t", str(os.cpu_count()), "--output-format", "jsonl"]
    rates = {1: [], together: []}
    for _ in range(args.repeats):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
        if out.returncode:
            raise SystemExit(f"llama-batched-bench failed ({' '.join(cmd)}):\n{out.stderr[-2000:]}")
        for line in out.stdout.splitlines():
            if line.startswith("{"):
                run = json.loads(line)
                rates[run["pl"]].append(run["speed_tg"])
    one, many = statistics.median(rates[1]), statistics.median(rates[together])
    return {"one_tps": one, "many_tps": many, "ratio": many / one}


def run_worker(mode: str, model: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", mode, "--model", str(model), "--tokens", str(args.tokens),
           "--repeats", str(args.repeats), "--prompt-tokens", str(args.prompt_tokens)]
    env = {**os.environ, **(AVX2_ENV if args.emulate_avx2 else {})}
    stdout, stderr = run_guarded(cmd, env, args.min_available)
    for line in reversed(stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise SystemExit(f"worker {mode} failed:\n{stdout[-3000:]}\n{stderr[-3000:]}")


def checkpoint_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


# --- the app, end to end ----------------------------------------------------------------------------

def ready_chat(proc, url: str, tokens: int):
    """(a gradio_client for the app `proc` serves at `url`, /chat's arguments for greedy replies of up to
    `tokens`), once /chat answers: the model loads (or converts, once) in the background, and that first
    answer also warms it up."""
    from gradio_client import Client

    deadline = time.time() + 900
    client = None
    while client is None:
        try:
            client = Client(url, verbose=False)
        except Exception:
            if proc.poll() is not None:
                raise SystemExit(f"app exited before it served: {proc.stdout.read()[-2000:] if proc.stdout else ''}")
            if time.time() > deadline:
                raise SystemExit("app did not start within 15 minutes (run it by hand to see why)")
            time.sleep(1)
    ask = dict(context="", do_sample=False, max_new_tokens=tokens, api_name="/chat")
    while True:
        try:
            client.predict("Summarize the passage: " + CONTEXT[:400], **ask)
            return client, ask
        except Exception as error:
            if "still loading" not in str(error) or time.time() > deadline:
                raise SystemExit(f"/chat failed: {error}")
            time.sleep(1)


def app_tokens_per_second(model: Path, flags: list, data: Path, tokens: int, repeats: int) -> float:
    """A real `python app.py` with `flags`; decode tokens/s of streamed /chat answers (greedy, up to
    `tokens` new tokens, counted by re-tokenizing the text shown), median of `repeats` after a warm-up."""
    from transformers import AutoTokenizer

    from tests.conftest import free_port

    port = free_port()
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "0"}
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--model", str(model), "--data", str(data),
                             "--port", str(port), *flags], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        client, ask = ready_chat(proc, f"http://127.0.0.1:{port}/", tokens)
        tokenizer = AutoTokenizer.from_pretrained(model)
        rates = []
        for i in range(repeats):
            # Decode rate as a user sees it stream: tokens shown between the first and the last update
            # over the time between them. (A random model may stop early at a stop token, so the
            # whole call's time over its length would weigh the prompt differently per mode.)
            job = client.submit(f"Write about gardens, take {i}.", **{k: v for k, v in ask.items()})
            seen = []
            for partial in job:
                seen.append((time.perf_counter(), len(tokenizer.encode(partial, add_special_tokens=False))))
            (t0, n0), (t1, n1) = seen[0], seen[-1]
            if n1 > n0 and t1 > t0:
                rates.append((n1 - n0) / (t1 - t0))
        if not rates:
            raise SystemExit("/chat replies were too short to time; raise --app-tokens")
        return statistics.median(rates)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def app_concurrency(model: Path, data: Path, tokens: int, repeats: int, together: int = 4, engine: str = "auto") -> dict:
    """A real `python app.py --cpu-engine ENGINE --concurrency N`, asked through gradio_client's /chat:
    each of N prompts alone, one after another, then all N at once (greedy, up to `tokens` new tokens).
    Tokens/s in all = tokens streamed / seconds from the submits to the last update (prefill included, as
    users wait for it), median of `repeats`; and whether each reply given with the others was identical
    to the same request alone (no cross-talk between batched rows)."""
    import threading

    from transformers import AutoTokenizer

    from tests.conftest import start_app, stop_app

    proc, url = start_app("--model", model, "--data", data, "--cpu-engine", engine, "--quantize", "int8",
                          "--concurrency", together)
    try:
        client, ask = ready_chat(proc, url, tokens)
        tokenizer = AutoTokenizer.from_pretrained(model)
        prompts = [f"Write about community gardens in city {i}, for schoolchildren." for i in range(together)]

        def ask_once(prompt: str, out: dict, start: float) -> None:
            last = ""
            for partial in client.submit(prompt, **ask):
                last = partial
            out[prompt] = (time.perf_counter() - start, len(tokenizer.encode(last, add_special_tokens=False)), last)

        alone_rates, together_rates, identical = [], [], []
        for _ in range(repeats):
            alone = {}
            for prompt in prompts:
                ask_once(prompt, alone, time.perf_counter())
                seconds, n, _ = alone[prompt]
                alone_rates.append(n / seconds)
            both, start = {}, time.perf_counter()
            threads = [threading.Thread(target=ask_once, args=(p, both, start)) for p in prompts]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            together_rates.append(sum(n for _, n, _ in both.values()) / max(s for s, _, _ in both.values()))
            identical.append(sum(both[p][2] == alone[p][2] for p in prompts))
        one = statistics.median(alone_rates)
        many = statistics.median(together_rates)
        return dict(one_tps=one, many_tps=many, ratio=many / one, identical=min(identical), replies=together,
                    tokens=[alone[p][1] for p in prompts], load=os.getloadavg())
    finally:
        stop_app(proc)


# --- quality of a trained model ---------------------------------------------------------------------

def gguf_decode_bytes(model) -> int:
    """The GGUF file, less the input embedding's rows a token does not read (F16, or about a byte a weight)."""
    config = model.config
    embedding = config.vocab_size * config.hidden_size
    return model.path.stat().st_size - (embedding * 2 if model.format == "none" else embedding)


def _teacher_forced(lm, ids: list, rows: list | None = None) -> "torch.Tensor":
    """Logits at every position of `ids` but the last (row p predicts ids[p + 1]), float32; or at `rows` only.
    torch: one forward pass. OpenVINO: the ids go through the engine one token at a time, as it decodes
    a reply, and each step's logits are that position's (what a reply sees, token by token). llama.cpp:
    _llamacpp_logprobs."""
    import torch

    if lm.engine == "llamacpp":
        return _llamacpp_logprobs(lm, ids, rows)

    if lm.engine == "openvino":
        row, first = lm.model.start(ids[:1])
        try:
            return torch.cat([first] + [lm.model.step(row, token) for token in ids[1:-1]])
        finally:
            lm.model.batch.leave(row)
    logits = lm.model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    return logits if rows is None else logits[rows]


def _llamacpp_logprobs(lm, ids: list, rows: list) -> "torch.Tensor":
    """llama.cpp's next-token log-probabilities after ids[:p + 1] for each p of `rows`, over the whole vocabulary:
    its server lists every token's log-probability when asked for as many as the vocabulary has (n_probs), computed
    from the raw logits (before any sampler), one request per position (about 0.7 s each, the list being 50k long),
    so callers ask for a few rows. Ids llama.cpp's vocabulary lacks (the embedding's padding rows) are -inf; a row
    llama.cpp does not list (its most likely token ends inside a UTF-8 character, held back and never listed) NaN."""
    import torch

    vocab = lm.model.config.vocab_size
    out = torch.full((len(rows), vocab), float("-inf"))
    for i, p in enumerate(rows):
        answer = lm.model.server.handle_completions({
            "prompt": ids[:p + 1], "n_predict": 1, "temperature": 0.0, "n_probs": vocab, "post_sampling_probs": False,
            "ignore_eos": True,  # else a reply that ends at once lists nothing; the list is the raw logits' anyway
            "cache_prompt": True})  # the prefix's keys and values are kept between the positions of one record
        logprobs = answer["choices"][0]["logprobs"]
        if logprobs is None:  # the most likely token ends inside a UTF-8 character: llama.cpp lists nothing for it
            out[i] = float("nan")
            continue
        listed = logprobs["content"][0]["top_logprobs"]
        out[i, [t["id"] for t in listed]] = torch.tensor([t["logprob"] for t in listed])
    return out


def _llamacpp_greedy(lm, ids: list, tokens: int) -> list:
    """The ids of `tokens` greedy new tokens from llama.cpp (end-of-text held back, as _greedy does)."""
    answer = lm.model.server.handle_completions({"prompt": ids, "n_predict": tokens, "temperature": 0.0, "ignore_eos": True,
                                                 "cache_prompt": False, "return_tokens": True, "verbose": True})
    return answer["__verbose"]["tokens"]  # all of them (the listed log-probabilities skip held-back ones)


def _greedy(lm, ids: list, tokens: int, eos) -> list:
    """`tokens` greedy new tokens after `ids` (end-of-text held back, so every reply has them all)."""
    import torch
    from transformers import GenerationConfig

    if lm.engine == "llamacpp":
        return _llamacpp_greedy(lm, ids, tokens)
    x = torch.tensor([ids])
    if lm.engine == "openvino":  # the engine's own loop, as space/chat.py calls it
        config = GenerationConfig(max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False, eos_token_id=eos)
        out = lm.model.generate(x, generation_config=config)
    else:
        out = lm.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=tokens, min_new_tokens=tokens,
                                do_sample=False, eos_token_id=eos, pad_token_id=lm.tokenizer.pad_token_id)
    return out[0, len(ids):].tolist()


def quality(model_dir: str, modes, records: int = 120, greedy_prompts: int = 16, greedy_tokens: int = 32,
            per_record: int = 8, ggufs: dict | None = None) -> list:
    """Per mode, against the full-precision torch model (fp32, the reference): eval loss on held-out
    dolly-shaped records and its delta; mean KL divergence of the next-token distribution from fp32's per
    token (smooth, where top-1 agreement jumps when a barely trained model's logits are nearly tied);
    top-1 agreement under teacher forcing; greedy replies identical to fp32's. OpenVINO modes (ov-none,
    ov-int8, ov-int4) and llama.cpp's (cpp-none, cpp-int8, cpp-int4) load as the app loads them
    (space/model.load_model, converted into DOLLY_CACHE); llama.cpp's score `per_record` positions of each
    record, spread over it (a request each), the reference the same positions. `ggufs`: {label: GGUF file of this
    model made elsewhere}, each scored on the llama.cpp engine too (e.g. llama-quantize's Q4_K_M).
    The reference's logits are recomputed per record rather than kept: with Pythia's 50k vocabulary,
    120 records' log-probabilities would take gigabytes."""
    import torch

    from dolly.prompt import format_example, format_prompt
    from space.model import load_model
    from tests.dolly_data import make_records

    # Numbers, not speed: one thread, because on a busy machine two OpenMP threads that wait on each
    # other made a forward pass 18x slower than one thread (measured while writing this).
    torch.set_num_threads(1)
    held = make_records(records, seed=12345)
    ref = load_model(model_dir, device="cpu", dtype="float32", quantize="none", cpu_engine="torch")
    eos = ref.model.generation_config.eos_token_id
    examples = [ref.tokenizer.encode(format_example(r["instruction"], r["response"], r["context"]),
                                     add_special_tokens=False)[:ref.window] for r in held]
    prompts = [ref.tokenizer.encode(format_prompt(r["instruction"], r["context"]), add_special_tokens=False)
               for r in held[:greedy_prompts]]
    with torch.inference_mode():
        ref_losses = [torch.nn.functional.cross_entropy(_teacher_forced(ref, ids), torch.tensor(ids[1:])).item()
                      for ids in examples]
        ref_generations = [_greedy(ref, ids, greedy_tokens, eos) for ids in prompts]
    ref_loss = statistics.mean(ref_losses)
    results = [dict(mode="fp32", model_mode=ref.mode + " (reference)", loss=ref_loss, delta=0.0, kl=0.0,
                    top1_agreement=1.0, greedy_identical=len(prompts), greedy_prompts=len(prompts),
                    mean_same_prefix=float(greedy_tokens), seconds=0.0)]
    def score(lm) -> dict:
        """`lm` against the reference: loss and its delta, KL, top-1 agreement, greedy replies."""
        losses, ref_part, kl_sum, agree, positions, unscored = [], [], 0.0, 0, 0, 0
        with torch.inference_mode():
            for ids in examples:
                # llama.cpp answers a position per request: a few spread over the record, and the reference's
                # loss over the same ones for the delta
                rows = (sorted({round(k * (len(ids) - 2) / (per_record - 1)) for k in range(per_record)})
                        if lm.engine == "llamacpp" else list(range(len(ids) - 1)))
                mine = _teacher_forced(lm, ids, rows)
                kept = ~torch.isnan(mine).all(1)  # rows the engine could not score (_llamacpp_logprobs)
                unscored += len(rows) - int(kept.sum())
                rows = [row for row, keep in zip(rows, kept.tolist()) if keep]
                mine = mine[kept]
                reference = _teacher_forced(ref, ids, rows)
                listed = torch.isfinite(mine).all(0)  # ids the engine's vocabulary lacks (padding): off both sides
                mine, reference = mine[:, listed], reference[:, listed]
                targets = torch.tensor(ids[1:])[rows]
                losses.append(torch.nn.functional.cross_entropy(mine, targets).item())
                ref_part.append(torch.nn.functional.cross_entropy(reference, targets).item())
                kl_sum += torch.nn.functional.kl_div(torch.log_softmax(mine, -1), torch.log_softmax(reference, -1),
                                                     log_target=True, reduction="sum").item()
                agree += (mine.argmax(-1) == reference.argmax(-1)).sum().item()
                positions += len(rows)
            generations = [_greedy(lm, ids, greedy_tokens, eos) for ids in prompts]
        same_prefix = [next((i for i, (a, b) in enumerate(zip(gen, want)) if a != b), len(want))
                       for gen, want in zip(generations, ref_generations)]
        loss = statistics.mean(losses)
        return dict(model_mode=lm.mode, loss=loss, delta=loss - statistics.mean(ref_part), kl=kl_sum / positions,
                    top1_agreement=agree / positions, greedy_identical=sum(n == greedy_tokens for n in same_prefix),
                    greedy_prompts=len(same_prefix), mean_same_prefix=statistics.mean(same_prefix),
                    positions=positions, unscored=unscored)

    for mode in [m for m in modes if m != "fp32"]:
        dtype, quantize, engine = MODES[mode]
        start = time.perf_counter()
        lm = load_model(model_dir, device="cpu", dtype=dtype, quantize=quantize, cpu_engine=engine)
        if lm.engine != engine:
            raise SystemExit(f"{mode}: asked for {engine}, got {lm.engine} ({lm.why})")
        results.append(dict(mode=mode, **score(lm), seconds=time.perf_counter() - start))
        print(f"(quality: {mode} measured in {results[-1]['seconds']:.0f} s, {results[-1]['positions']} positions"
              f"{', %d not listed by llama.cpp' % results[-1]['unscored'] if results[-1]['unscored'] else ''})", flush=True)
        del lm
    for label, path in (ggufs or {}).items():  # GGUFs made elsewhere (llama.cpp's llama-quantize), in the same engine
        from space import engine_llamacpp
        from space.model import LoadedModel

        start = time.perf_counter()
        engine = engine_llamacpp.load(Path(path), ref.model.config, "int4", ref.tokenizer)
        lm = LoadedModel(engine, ref.tokenizer, path, "cpu", engine.precision, "int4", engine="llamacpp")
        results.append(dict(mode=f"gguf {label}", **score(lm), seconds=time.perf_counter() - start))
        results[-1]["model_mode"] = f"llama.cpp, {Path(path).name}"
        print(f"(quality: {label} measured in {results[-1]['seconds']:.0f} s, {results[-1]['unscored']} of "
              f"{results[-1]['positions']} positions not listed by llama.cpp)", flush=True)
        del lm, engine
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="1b,2.8b")
    parser.add_argument("--modes", default="int8,int4,bf16,fp32")
    parser.add_argument("--tokens", type=int, default=32, help="new tokens per decode measurement")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--app-tokens", type=int, default=48, help="new tokens per /chat answer in the app row")
    parser.add_argument("--no-app", action="store_true", help="skip the app (/chat) comparison")
    parser.add_argument("--no-kernels", action="store_true", help="skip the single-linear kernel comparison")
    parser.add_argument("--quality", metavar="MODEL_DIR", help="also measure quality on a model python -m train wrote")
    parser.add_argument("--quality-modes", default="ov-none,ov-int8,ov-int4,bf16,int8,int4",
                        help="the modes --quality compares with the fp32 torch reference")
    parser.add_argument("--quality-records", type=int, default=120, help="held-out records --quality scores")
    parser.add_argument("--quality-gguf", metavar="LABEL=FILE", action="append", default=[],
                        help="also score this GGUF of the --quality model on the llama.cpp engine (repeatable)")
    parser.add_argument("--cache-dir", default=os.environ.get("DOLLY_BENCH_CACHE", "/tmp/dolly-bench-models"),
                        help="where the random-init models are saved (2 GB + 5.6 GB), reused between runs")
    parser.add_argument("--emulate-avx2", action="store_true",
                        help="run PyTorch's and oneDNN's kernels as on an AVX2-only CPU (ATEN_CPU_CAPABILITY=avx2, "
                             "ONEDNN_MAX_CPU_ISA=AVX2); OpenVINO keeps this CPU's kernels")
    parser.add_argument("--batch", action="store_true",
                        help="only the batching figures: 1 vs 4 replies at once on the OpenVINO engine (ov-int8), "
                             "in the engine (--app-concurrency: through /chat), on the first of --shapes")
    parser.add_argument("--app-engine", default="auto", help="--app-concurrency's --cpu-engine (default: auto)")
    parser.add_argument("--app-concurrency", action="store_true",
                        help="only: /chat through a real `python app.py --cpu-engine openvino --concurrency 4`, 4 replies "
                             "at once vs 1 (tokens/s in all, and each reply identical to the same request alone), on the "
                             "first of --shapes, --app-tokens new tokens")
    parser.add_argument("--conversion", metavar="FORMAT",
                        help="only: convert each of --shapes for OpenVINO in FORMAT (none/int8/int4) into a fresh cache "
                             "under --cache-dir, as the app's first start does: time, peak RSS, and which stage sets it")
    parser.add_argument("--min-available", type=float, default=3.0, metavar="GIB",
                        help="kill a worker if this machine's available memory drops under GIB (a shared machine's "
                             "other processes must never be OOM-killed by a 2.8b run)")
    parser.add_argument("--llama-bench", metavar="BIN", help="llama.cpp's llama-bench, the reference engine (with --gguf)")
    parser.add_argument("--llama-batched-bench", metavar="BIN",
                        help="with --batch: llama.cpp's llama-batched-bench on the --gguf SHAPE:Q8_0 file, 1 vs 4 sequences "
                             "decoded in one batch, the reference for the batching figures")
    parser.add_argument("--gguf", action="append", default=[], metavar="SHAPE:FORMAT=FILE",
                        help="a GGUF of a shape for --llama-bench, e.g. 1b:Q8_0=q8.gguf (repeatable)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "batch":
        return batch_worker(args)
    if args.worker and args.worker.startswith("convert:"):
        return conversion_worker(args)
    if args.worker:
        return worker(args)

    from space.quantize import native_bf16

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    for name in modes:
        if name not in MODES:
            parser.error(f"unknown mode {name!r}: use {', '.join(MODES)}")
    references = {}  # shape -> [(format, gguf)]
    for item in args.gguf:
        label, sep, gguf = item.partition("=")
        shape, colon, fmt = label.partition(":")
        if not (sep and colon and Path(gguf).is_file()):
            parser.error(f"--gguf {item!r}: write SHAPE:FORMAT=FILE of an existing GGUF, e.g. 1b:Q8_0=q8.gguf")
        references.setdefault(shape, []).append((fmt, gguf))
    if args.llama_batched_bench and not (args.batch and Path(args.llama_batched_bench).is_file()):
        parser.error("--llama-batched-bench goes with --batch, and names llama.cpp's build/bin/llama-batched-bench")
    if references and not args.llama_batched_bench and not (args.llama_bench and Path(args.llama_bench).is_file()):
        parser.error("--gguf needs --llama-bench: the path of llama.cpp's llama-bench binary")
    cache = Path(args.cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    if args.emulate_avx2:
        print(f"PyTorch kernels limited to AVX2: {AVX2_ENV}", flush=True)
    print(f"machine: {cpu_model()}, {os.cpu_count()} CPUs, flags: {cpu_flags()}, native bf16: {native_bf16()}, "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    if args.app_concurrency:
        from tests.dolly_data import make_records, write_jsonl

        data = write_jsonl(cache / "dolly-bench.jsonl", make_records(200, seed=0))
        r = app_concurrency(save_shape(shapes[0], cache), data, args.app_tokens, args.repeats, engine=args.app_engine)
        print(f"\n/chat with --cpu-engine {args.app_engine} --quantize int8 --concurrency 4, pythia-{shapes[0]} shape, greedy, up to "
              f"{args.app_tokens} new tokens (replies of {r['tokens']} tokens): 1 reply {r['one_tps']:.2f} tok/s, 4 at once "
              f"{r['many_tps']:.2f} tok/s in all: {r['ratio']:.2f}x (target >= 2.5x); replies identical to the same "
              f"request alone: {r['identical']}/{r['replies']} (worst of {args.repeats}); load average {r['load'][0]:.1f}",
              flush=True)
        return
    if args.conversion:
        import shutil

        for shape in shapes:
            path = save_shape(shape, cache)
            fresh = cache / f"conversion-{shape}-{args.conversion}"  # never a cached conversion: it must run
            shutil.rmtree(fresh, ignore_errors=True)
            cmd = [sys.executable, __file__, "--worker", f"convert:{args.conversion}", "--model", str(path)]
            print(f"\nconverting the pythia-{shape} shape ({checkpoint_bytes(path) / GB:.2f} GB bf16) to OpenVINO "
                  f"{args.conversion}, load average {os.getloadavg()[0]:.1f}, available memory "
                  f"{memory_available() / 2**30:.1f} GiB ...", flush=True)
            stdout, stderr = run_guarded(cmd, {**os.environ, "DOLLY_CACHE": str(fresh)}, args.min_available)
            lines = [line for line in stdout.splitlines() if line.startswith("{")]
            if not lines:
                raise SystemExit(f"conversion failed:\n{stdout[-3000:]}\n{stderr[-3000:]}")
            print("\n".join(line for line in stdout.splitlines() if not line.startswith("{")))
            r = json.loads(lines[-1])
            print(f"pythia-{shape} -> OpenVINO {args.conversion}: {r['seconds']:.0f} s, peak RSS {r['rss_peak'] / GB:.2f} GB, "
                  f"converted model {r['bytes'] / GB:.2f} GB; load average at the end {os.getloadavg()[0]:.1f}\n"
                  f"(kept: DOLLY_CACHE={fresh} python bench/chat_cpu.py --shapes {shape} --modes ov-{args.conversion} "
                  f"... runs on it without converting again)", flush=True)
        return
    if args.batch:
        path = save_shape(shapes[0], cache)
        cmd = [sys.executable, __file__, "--worker", "batch", "--model", str(path), "--tokens", str(args.tokens),
               "--repeats", str(args.repeats), "--prompt-tokens", str(args.prompt_tokens)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if not lines:
            raise SystemExit(f"batch worker failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}")
        r = json.loads(lines[-1])
        print(f"\nbatching, pythia-{shapes[0]} shape, {r['model_mode']}, {args.tokens} new tokens per reply: 1 reply "
              f"{r['one_tps']:.2f} tok/s, 4 at once {r['four_tps']:.2f} tok/s in all: {r['ratio']:.2f}x (target >= 2.5x); "
              f"{r['rows']} rows in {r['steps']} batched steps; load average {r['load'][0]:.1f}", flush=True)
        if args.llama_batched_bench:
            fmt, gguf = next(((f, g) for f, g in references.get(shapes[0], []) if f.upper() == "Q8_0"), (None, None))
            if gguf is None:
                parser.error(f"--llama-batched-bench needs --gguf {shapes[0]}:Q8_0=FILE")
            ref = llama_batched(args.llama_batched_bench, gguf, args)
            print(f"llama.cpp {fmt} in the same run (llama-batched-bench, one batch, same prompt and reply lengths): "
                  f"1 sequence {ref['one_tps']:.2f} tok/s, 4 at once {ref['many_tps']:.2f} tok/s in all: {ref['ratio']:.2f}x; "
                  f"this engine against it: 1 reply {r['one_tps'] / ref['one_tps']:.2f}x, 4 at once "
                  f"{r['four_tps'] / ref['many_tps']:.2f}x; load average {os.getloadavg()[0]:.1f}", flush=True)
        return
    bandwidth = [read_bandwidth()]
    print(f"read bandwidth: {bandwidth[0] / GB:.1f} GB/s", flush=True)
    if not args.no_kernels:
        print("\n### one 2560x10240 linear (pythia-2.8b's MLP), median ms\n\n| rows | layer | ms |\n|---|---|---|")
        for rows_in, name, ms in in_thread(kernels):
            print(f"| {rows_in} | {name} | {ms:.2f} |", flush=True)
    results = {}
    for shape in shapes:
        path = save_shape(shape, cache)
        weights = checkpoint_bytes(path)
        print(f"\n### pythia-{shape} shape (random init), checkpoint {weights / GB:.2f} GB bf16; prompt "
              f"{args.prompt_tokens} tokens, {args.tokens} new tokens, median of {args.repeats}\n", flush=True)
        print("| mode | runs as | prefill 128 tok (ms) | decode tok/s | bytes/token (GB) | bandwidth bound tok/s "
              "| % of bound | peak RSS (GB) | RSS target (GB) | load (s) |\n|---|---|---|---|---|---|---|---|---|---|",
              flush=True)
        for mode in modes:
            r = run_worker(mode, path, args)
            bw = statistics.mean(bandwidth)
            bound = bw / r["decode_bytes"]
            # The weight bytes of the form loaded: the bf16 checkpoint, or twice that in float32.
            loaded = weights * (2 if mode == "fp32" else 1)
            target = 1.5 * loaded + 1 * GB
            r.update(bound=bound, rss_target=target)
            results[(shape, mode)] = r
            print(f"| {mode} | {r['model_mode']} | {r['prefill_ms']:.0f} | {r['decode_tps']:.2f} | "
                  f"{r['decode_bytes'] / GB:.2f} | {bound:.1f} | {r['decode_tps'] / bound:.0%} | "
                  f"{r['rss_peak'] / GB:.2f} | {target / GB:.2f} {'ok' if r['rss_peak'] <= target else 'OVER'} | "
                  f"{r['load_s']:.0f} |", flush=True)
        for fmt, gguf in references.get(shape, []):
            ref = llama_bench(args.llama_bench, gguf, args)
            print(f"| llama.cpp {fmt} (reference) | llama-bench, {ref['build']} | {ref['prefill_ms']:.0f} | "
                  f"{ref['decode_tps']:.2f} ± {ref['decode_sd']:.2f} | | | | | | |", flush=True)
            results[(shape, f"llama.cpp {fmt}")] = ref
        for fmt, _ in references.get(shape, []):
            ref = results[(shape, f"llama.cpp {fmt}")]
            print(f"\nagainst llama.cpp {fmt}, pythia-{shape}: " + ", ".join(
                f"{m} decode {results[(shape, m)]['decode_tps'] / ref['decode_tps']:.2f}x, prefill "
                f"{results[(shape, m)]['prefill_ms'] / ref['prefill_ms']:.2f}x the time" for m in modes if m.startswith(("ov-", "cpp-")))
                + " (target: the default (ov-int8 with AVX-512, else cpp-int8) >= 0.9x Q8_0's decode, the 4-bit mode "
                  ">= 0.9x Q4_K_M's)", flush=True)
        base = results.get((shape, "fp32")) or results.get((shape, "bf16"))
        if base:
            print("\nspeed-up of decode over " + base["mode"] + ": " + ", ".join(
                f"{m} {results[(shape, m)]['decode_tps'] / base['decode_tps']:.2f}x" for m in modes), flush=True)
    bandwidth.append(read_bandwidth())
    print(f"\nread bandwidth at the end: {bandwidth[-1] / GB:.1f} GB/s (start {bandwidth[0] / GB:.1f})")

    if not args.no_app and "1b" in shapes:
        from tests.dolly_data import make_records, write_jsonl

        data = write_jsonl(cache / "dolly-bench.jsonl", make_records(200, seed=0))
        path = save_shape("1b", cache)
        # The default, named: a DOLLY_CPU_ENGINE in this shell must not change what "default" measures.
        fast = app_tokens_per_second(path, ["--cpu-engine", "auto"], data, args.app_tokens, args.repeats)
        slow = app_tokens_per_second(path, ["--dtype", "float32", "--quantize", "none", "--cpu-engine", "torch"], data, args.app_tokens,
                                        args.repeats)
        print(f"\n/chat on the 1b shape (streamed decode rate, up to {args.app_tokens} new tokens, greedy): default CPU mode "
              f"{fast:.2f} tok/s, --dtype float32 --quantize none --cpu-engine torch {slow:.2f} tok/s: {fast / slow:.2f}x (target >= 3x)")

    if args.quality:
        qmodes = [m.strip() for m in args.quality_modes.split(",") if m.strip()]
        for name in qmodes:
            if name not in MODES:
                parser.error(f"unknown --quality-modes mode {name!r}: use {', '.join(MODES)}")
        print(f"\n### quality: {args.quality}, {args.quality_records} held-out records, reference fp32 (torch)\n\n"
              "| mode | runs as | eval loss | delta vs fp32 | KL from fp32 per token | top-1 agreement with fp32 | "
              "greedy 32-token replies identical to fp32 | mean tokens before the first difference |\n"
              "|---|---|---|---|---|---|---|---|", flush=True)
        ggufs = dict(item.split("=", 1) for item in args.quality_gguf)
        for q in quality(args.quality, qmodes, records=args.quality_records, ggufs=ggufs):
            print(f"| {q['mode']} | {q['model_mode']} | {q['loss']:.4f} | {q['delta']:+.4f} | {q['kl']:.6f} | {q['top1_agreement']:.2%} | "
                  f"{q['greedy_identical']}/{q['greedy_prompts']} | {q['mean_same_prefix']:.1f} |", flush=True)

    if ("2.8b", "int8") in results:
        r = results[("2.8b", "int8")]
        ok = r["decode_tps"] >= 8 and r["decode_tps"] >= 0.5 * r["bound"]
        print(f"\n2.8b default CPU mode (int8): {r['decode_tps']:.2f} tok/s, {r['decode_tps'] / r['bound']:.0%} of "
              f"the bound: {'targets met' if ok else 'TARGETS NOT MET'} (>= 8 tok/s and >= 50%)")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
