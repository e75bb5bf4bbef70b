"""Chat streaming benchmark: is the app's streaming path as fast as raw generate(), and how much
sooner does the user see text than with a non-streaming pipeline like the seed's?

    python bench/chat.py [--tokens 256] [--repeats 3] [--first-repeats 15]

One run measures, on the same pythia-70m-shaped random-init model and the same prompt:
  (a) raw model.generate(): prefill time (1 new token) and tokens/s over N new tokens;
  (b) the app's path (space/chat.py: build_prompt + stream_reply): time to first visible text, tokens/s;
  (c) a transformers text-generation pipeline, not streamed (the seed's way): time until any text;
and the peak memory (RSS) of the whole app with that model loaded, next to the app without one.
Every path is forced to write exactly N tokens (min_new_tokens), sampling with the seed's settings.
Targets: (b) >= 90% of (a) tokens/s; (b) first text <= 1.2x (a) prefill; (c) >= 10x (b) first text.
"""
import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM, pipeline  # noqa: E402

from space.chat import build_prompt, stream_reply, validate_settings  # noqa: E402
from space.model import load_model  # noqa: E402
from tests.tiny_model import pythia_tokenizer, small_tokenizer  # noqa: E402
from dolly.prompt import add_special_tokens  # noqa: E402

INSTRUCTION = "Summarize the passage in three sentences."
CONTEXT = ("Community gardens turn empty city lots into shared plots where neighbours grow vegetables and flowers. "
           "Besides food, they offer shade, a place to meet, and lessons for schoolchildren about where food comes "
           "from. Cities that support them often see less litter and more people outdoors in the evenings.")


def save_model(path: Path) -> str:
    """pythia-70m's shape (hidden 512, 6 layers, 8 heads, vocab 50304), random weights, Dolly tokens."""
    tokenizer = pythia_tokenizer()
    which = "GPT-NeoX-20B (real)" if tokenizer is not None else "small BPE (real one not on this machine)"
    tokenizer = tokenizer if tokenizer is not None else small_tokenizer()
    add_special_tokens(tokenizer)
    torch.manual_seed(0)
    config = GPTNeoXConfig(vocab_size=50304, hidden_size=512, num_hidden_layers=6, num_attention_heads=8,
                           intermediate_size=2048, max_position_embeddings=2048, rotary_pct=0.25,
                           bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                           tie_word_embeddings=False)
    GPTNeoXForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return which


def off_main_thread(fn):
    """Run fn in a worker thread, as Gradio runs every event function. All three paths run this way:
    on this shared 2-core machine, torch on the main thread measured up to 10x slower under load
    than the same generate() in a worker thread, which would flatter the app against the baseline."""
    box = []
    thread = threading.Thread(target=lambda: box.append(fn()))
    thread.start()
    thread.join()
    if not box:
        raise RuntimeError("benchmark step failed (see the traceback above)")
    return box[0]


def timed(fn):
    def run():
        start = time.perf_counter()
        result = fn()
        return time.perf_counter() - start, result
    return off_main_thread(run)


def raw_generate(lm, ids, tokens):
    inputs = torch.tensor([ids])
    kwargs = dict(attention_mask=torch.ones_like(inputs), do_sample=True, top_p=0.92, top_k=0,
                  pad_token_id=lm.tokenizer.pad_token_id)
    def generate(n):
        with torch.inference_mode():  # thread-local: entered in the generating thread, as stream_reply does
            return lm.model.generate(inputs, max_new_tokens=n, min_new_tokens=n, **kwargs)

    prefill, _ = timed(lambda: generate(1))
    total, out = timed(lambda: generate(tokens))
    assert out.shape[1] - len(ids) == tokens
    return prefill, tokens / total


def app_first_text(lm, tokens):
    """Seconds from the request to the app's first visible text; the stream is then closed, which
    (as Stop does) ends generation, so many samples are cheap."""
    def run():
        start = time.perf_counter()
        settings = validate_settings(max_new_tokens=tokens)
        prompt = build_prompt(lm.tokenizer, INSTRUCTION, CONTEXT, window=lm.window, max_new_tokens=tokens)
        stream = stream_reply(lm, prompt.input_ids, settings, min_new_tokens=tokens)
        next(stream)
        first = time.perf_counter() - start
        stream.close()
        return first
    return off_main_thread(run)


def raw_prefill(lm, ids):
    inputs = torch.tensor([ids])

    def generate():
        with torch.inference_mode():
            return lm.model.generate(inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=1, do_sample=True,
                                     top_p=0.92, top_k=0, pad_token_id=lm.tokenizer.pad_token_id)
    return timed(generate)[0]


def app_stream(lm, tokens):
    return off_main_thread(lambda: _app_stream(lm, tokens))


def _app_stream(lm, tokens):
    start = time.perf_counter()
    settings = validate_settings(max_new_tokens=tokens)
    prompt = build_prompt(lm.tokenizer, INSTRUCTION, CONTEXT, window=lm.window, max_new_tokens=tokens)
    first, text = None, ""
    for text in stream_reply(lm, prompt.input_ids, settings, min_new_tokens=tokens):
        if first is None:
            first = time.perf_counter() - start
    total = time.perf_counter() - start
    return first, tokens / total, text


def seed_pipeline(generator, prompt_text, tokens):
    total, out = timed(lambda: generator(prompt_text, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=True,
                                         top_p=0.92, top_k=0, return_full_text=False))
    assert out[0]["generated_text"]
    return total  # nothing is visible before the whole reply is


APP_SCRIPT = textwrap.dedent("""
    import resource, sys, time
    sys.path.insert(0, {root!r})
    import app
    from gradio_client import Client
    from tests.conftest import free_port
    demo = app.build_app(app.parse_args(["--model", {model!r}, "--data", {data!r}]))
    demo.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    client = Client(demo.local_url, verbose=False)
    deadline = time.time() + 300
    while True:
        try:
            client.predict("Hello", max_new_tokens=64, api_name="/chat")
            break
        except Exception as error:
            if "still loading" not in str(error) or time.time() > deadline:
                print("error:", str(error)[:200]); break
            time.sleep(0.2)
    import psutil
    now = psutil.Process().memory_info().rss / 2**20
    demo.close()
    print(now, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
""")


def app_rss(model: str, data: Path) -> tuple[float, float]:
    """(RSS after answering one chat, peak RSS) in MiB of a fresh app process."""
    out = subprocess.run([sys.executable, "-c", APP_SCRIPT.format(root=str(ROOT), model=model, data=str(data))],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "0"})
    lines = out.stdout.strip().splitlines()
    try:
        now, peak = map(float, lines[-1].split())
        return now, peak
    except (IndexError, ValueError):
        raise SystemExit(f"app memory run failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each path (after one warm-up); medians")
    parser.add_argument("--first-repeats", type=int, default=15,
                        help="samples of prefill and of the app's first text (cheap; a first-token time of tens "
                             "of ms is noisy on a shared machine, so it gets more samples than throughput)")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "pythia-70m-shaped"
        which = save_model(model_dir)
        lm = load_model(str(model_dir), device="cpu", dtype="float32")
        prompt = build_prompt(lm.tokenizer, INSTRUCTION, CONTEXT, window=lm.window, max_new_tokens=args.tokens)
        generator = pipeline("text-generation", model=lm.model, tokenizer=lm.tokenizer, device="cpu")
        print(f"model: pythia-70m-shaped random init, tokenizer {which}; prompt {len(prompt.input_ids)} tokens; "
              f"{args.tokens} new tokens; {torch.get_num_threads()} CPU threads; {platform.processor() or platform.machine()}")

        raw_generate(lm, prompt.input_ids, 8), app_stream(lm, 8), seed_pipeline(generator, prompt.text, 8)  # warm-up
        a_prefill, a_tps, b_first, b_tps, c_first = [], [], [], [], []
        for _ in range(args.repeats):  # interleaved, so a slow moment of a shared machine hits all paths
            prefill, tps = raw_generate(lm, prompt.input_ids, args.tokens)
            a_prefill.append(prefill), a_tps.append(tps)
            first, tps, _ = app_stream(lm, args.tokens)
            b_first.append(first), b_tps.append(tps)
            c_first.append(seed_pipeline(generator, prompt.text, args.tokens))
        for _ in range(args.first_repeats):  # interleaved, as above
            a_prefill.append(raw_prefill(lm, prompt.input_ids))
            b_first.append(app_first_text(lm, args.tokens))
        med = statistics.median
        a_prefill, a_tps, b_first, b_tps, c_first = map(med, (a_prefill, a_tps, b_first, b_tps, c_first))

        data = Path(tmp) / "dolly.jsonl"
        from tests.dolly_data import make_records, write_jsonl
        write_jsonl(data, make_records(200, seed=0))
        weights_mib = sum(p.numel() * p.element_size() for p in lm.model.parameters()) / 2**20
        del lm, generator
        rss_model = app_rss(str(model_dir), data)
        rss_none = app_rss(str(Path(tmp) / "no-model"), data)

    rows = [
        ("(a) raw model.generate", f"{a_prefill * 1000:.0f} ms (prefill)", f"{a_tps:.1f}", "baseline"),
        ("(b) app streaming path", f"{b_first * 1000:.0f} ms", f"{b_tps:.1f}",
         f"{b_tps / a_tps:.0%} of (a) tok/s (target >= 90%); first text {b_first / a_prefill:.2f}x prefill (target <= 1.2x)"),
        ("(c) seed-style pipeline, not streamed", f"{c_first * 1000:.0f} ms", f"{args.tokens / c_first:.1f}",
         f"first text {c_first / b_first:.0f}x later than (b) (target >= 10x)"),
    ]
    print("\n| path | first text visible | tokens/s | vs baseline |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(f"\nMemory of the whole app (app.build_app + launch, one chat answered), RSS now / peak: "
          f"{rss_model[0]:.0f} / {rss_model[1]:.0f} MiB with the model loaded; {rss_none[0]:.0f} / {rss_none[1]:.0f} MiB "
          f"with no model (the model's share ≈ {rss_model[0] - rss_none[0]:.0f} MiB; its weights are "
          f"{weights_mib:.0f} MiB in float32).")
    print(f"load average during the run (shared machine): {os.getloadavg()[0]:.1f} at the end")
    ok = b_tps >= 0.9 * a_tps and b_first <= 1.2 * a_prefill and c_first >= 10 * b_first
    print("targets met" if ok else "TARGETS NOT MET")


if __name__ == "__main__":
    main()
