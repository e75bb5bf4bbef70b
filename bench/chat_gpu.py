"""GPU chat speed: decode tokens/s and time to first token for Dolly's sizes, through the app's path.

    python bench/chat_gpu.py                    # pythia-2.8b and -12b shapes, bf16, on cuda
    python bench/chat_gpu.py --shapes 2.8b --tokens 128 --repeats 5

Random-init models with Pythia's real shapes (what databricks/dolly-v2-3b and -12b are), built
directly on the GPU in bfloat16 (nothing is downloaded or saved: 12b is 24 GB), wrapped as the app's
LoadedModel, and driven through space/chat.stream_reply, the same generation path the Chat tab and
/v1 use (streamer, stop criteria, Dolly stop tokens). For each shape:
  - time to first token: from the call to the first visible text, for a --prompt-tokens prompt;
  - decode tokens/s: (N - 1) / (time for N tokens - time for 1 token), greedy, forced to N tokens;
  - the same decode rate from a bare model.generate(), to show what the app's path costs;
  - peak GPU memory.
Never needed by CI or the tests; it exits with a message where there is no CUDA GPU. Results go to
bench/RESULTS.md with the card's name, which the output's first line prints.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.chat import off_main_thread as in_thread  # noqa: E402  (as Gradio runs handlers: in a worker thread)

SHAPES = {  # EleutherAI's configs (dolly-v2-3b is pythia-2.8b, dolly-v2-12b is pythia-12b)
    "70m": dict(hidden_size=512, num_hidden_layers=6, num_attention_heads=8),  # a smoke test of this script
    "2.8b": dict(hidden_size=2560, num_hidden_layers=32, num_attention_heads=32),
    "12b": dict(hidden_size=5120, num_hidden_layers=36, num_attention_heads=40),
}
TOKENIZER = ROOT.parent / "shared" / "data" / "pythia-tokenizer"


def tokenizer_for(path: Path):
    """The real GPT-NeoX tokenizer with Dolly's markers; else the tests' small BPE (ids stay below
    its vocabulary then, so the model is built with that vocabulary: a few % fewer weights)."""
    from transformers import AutoTokenizer

    from dolly.prompt import add_special_tokens

    if (path / "tokenizer.json").exists():
        tokenizer, which = AutoTokenizer.from_pretrained(path), "GPT-NeoX-20B (real)"
    else:
        from tests.tiny_model import small_tokenizer

        tokenizer, which = small_tokenizer(), f"small BPE ({path} not found; embeddings sized to it)"
    add_special_tokens(tokenizer)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer, which


def build(shape: str, tokenizer, real_vocab: bool, device: str):
    import torch
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from space.model import LoadedModel

    dims = SHAPES[shape]
    vocab = 50304 if real_vocab else len(tokenizer)
    config = GPTNeoXConfig(vocab_size=vocab, intermediate_size=4 * dims["hidden_size"], max_position_embeddings=2048,
                           rotary_pct=0.25, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           tie_word_embeddings=False, **dims)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # built in bf16: 12b in float32 would be 48 GB
    try:
        with torch.device(device):
            model = GPTNeoXForCausalLM(config).eval()
    finally:
        torch.set_default_dtype(torch.float32)
    return LoadedModel(model, tokenizer, f"pythia-{shape}-shaped", device, "bfloat16")


def measure(lm, ids, tokens: int, repeats: int) -> dict:
    import torch

    cuda = lm.device.startswith("cuda")

    def sync():
        if cuda:
            torch.cuda.synchronize()

    from space.chat import stream_reply, validate_settings

    def app(n):
        settings = validate_settings(do_sample=False, max_new_tokens=n)
        sync()
        start = time.perf_counter()
        first = None
        for _ in stream_reply(lm, ids, settings, min_new_tokens=n):
            if first is None:
                first = time.perf_counter() - start
        sync()
        return first, time.perf_counter() - start

    inputs = torch.tensor([ids], device=lm.device)

    def raw(n):
        sync()
        start = time.perf_counter()
        with torch.inference_mode():
            lm.model.generate(inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=n, min_new_tokens=n,
                              do_sample=False, pad_token_id=lm.tokenizer.pad_token_id)
        sync()
        return time.perf_counter() - start

    in_thread(lambda: app(8)), in_thread(lambda: raw(8))  # warm-up (CUDA kernels, allocator)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    firsts, app_rates, raw_rates = [], [], []
    for _ in range(repeats):
        first, one = in_thread(lambda: app(1))
        _, full = in_thread(lambda: app(tokens))
        firsts.append(first)
        app_rates.append((tokens - 1) / (full - one))
        raw_rates.append((tokens - 1) / (in_thread(lambda: raw(tokens)) - in_thread(lambda: raw(1))))
    med = statistics.median
    return dict(ttft_ms=med(firsts) * 1000, app_tps=med(app_rates), raw_tps=med(raw_rates),
                peak_gb=torch.cuda.max_memory_allocated() / 1e9 if cuda else float("nan"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="2.8b,12b")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per decode measurement")
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokenizer", type=Path, default=TOKENIZER)
    parser.add_argument("--device", default="cuda", help="cuda (or cpu, with --shapes 70m, to smoke-test the script)")
    args = parser.parse_args()

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("No CUDA GPU here: bench/chat_gpu.py measures GPU generation; bench/chat_cpu.py is the "
                         "CPU benchmark.")
    from dolly.prompt import format_prompt

    tokenizer, which = tokenizer_for(args.tokenizer)
    real_vocab = "real" in which
    card = (f"{torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)"
            if args.device.startswith("cuda") else args.device)
    print(f"card: {card}, torch {torch.__version__}, CUDA {torch.version.cuda}; tokenizer {which}")
    context = "Community gardens turn empty city lots into shared plots where neighbours grow vegetables. " * 40
    ids = tokenizer.encode(format_prompt("Summarize the passage.", context), add_special_tokens=False)
    ids = ids[-args.prompt_tokens:]
    print(f"\nbf16, greedy, prompt {len(ids)} tokens, {args.tokens} new tokens, median of {args.repeats}\n")
    print("| shape | time to first token (ms) | decode tok/s (app path) | decode tok/s (bare generate) "
          "| app / bare | peak GPU memory (GB) |\n|---|---|---|---|---|---|")
    for shape in [s.strip() for s in args.shapes.split(",") if s.strip()]:
        lm = build(shape, tokenizer, real_vocab, args.device)
        r = measure(lm, ids, args.tokens, args.repeats)
        print(f"| pythia-{shape} | {r['ttft_ms']:.0f} | {r['app_tps']:.1f} | {r['raw_tps']:.1f} | "
              f"{r['app_tps'] / r['raw_tps']:.0%} | {r['peak_gb']:.1f} |", flush=True)
        del lm
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
