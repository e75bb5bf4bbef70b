"""Evaluation throughput: Dolly's seven lm-eval tasks at --limit 200 on a pythia-160m-shaped model.

The tool's path (train.eval: lm-eval's own task YAMLs pointed at local files, HFLM around an already
loaded model, batch size 8 on a CPU) against the same run at batch size 1 as the baseline, on the same
documents (generated in each task's Hub schema by tests/eval_data.py), one after the other, each in a
fresh process (so its peak RSS is its own). Reports documents/s, the ratio, and peak memory.

    python bench/eval.py [--limit 200] [--shape 160m|1.4b] [--device cpu|cuda] [--no-baseline]
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHAPES = {  # EleutherAI/pythia-* configs
    "160m": dict(hidden_size=768, num_layers=12, num_heads=12),
    "1.4b": dict(hidden_size=2048, num_layers=24, num_heads=16),
}


def child(args) -> None:
    """One timed configuration in this (fresh) process; prints a JSON line."""
    os.environ.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    import torch
    from lm_eval.models.huggingface import HFLM

    from train.eval import load_model
    from train.eval_tasks import DOLLY_TASKS, run_harness

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    model, tokenizer = load_model(args.model_dir, args.device, dtype)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as work:
        start, cpu = time.perf_counter(), time.process_time()
        results = run_harness(lm, list(DOLLY_TASKS), task_data=Path(args.task_data), limit=args.limit,
                              workdir=Path(work))
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    docs = sum(r["n"] for r in results.values())
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if args.device == "cuda" else None
    print(json.dumps({"batch_size": args.batch_size, "seconds": seconds, "cpu_seconds": cpu, "docs": docs,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "peak_gpu_mib": peak_gpu, "scores": {t: r["score"] for t, r in results.items()}}))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--shape", choices=sorted(SHAPES), default="160m")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=8, help="the tool's CPU batch size")
    p.add_argument("--no-baseline", action="store_true", help="skip the batch-size-1 baseline")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--task-data", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args)

    from tests.eval_data import write_task_data
    from tests.tiny_model import pythia_tokenizer, save_tiny_model, small_tokenizer
    from train.eval_tasks import DOLLY_TASKS

    tokenizer = pythia_tokenizer()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        # Random init: throughput and memory depend on the shape, not on what the weights know.
        save_tiny_model(work / "model", tokenizer if tokenizer is not None else small_tokenizer(),
                        max_positions=2048, **SHAPES[args.shape])
        write_task_data(work / "tasks", DOLLY_TASKS, n=args.limit)
        configs = [args.batch_size] + ([] if args.no_baseline else [1])
        runs = []
        for batch in configs:
            cmd = [sys.executable, __file__, "--child", "--model-dir", str(work / "model"), "--task-data",
                   str(work / "tasks"), "--limit", str(args.limit), "--device", args.device, "--batch-size", str(batch)]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    load = os.getloadavg()[0]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {args.device}; load average {load:.1f}; "
          f"pythia-{args.shape} shape, random init, tokenizer: {'GPT-NeoX-20B' if tokenizer else 'small BPE'}")
    base = runs[-1] if len(runs) > 1 else None
    print("| batch size | documents | seconds | CPU seconds (all threads) | documents/s | peak RSS (MiB) | vs batch 1 |")
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        rate = run["docs"] / run["seconds"]
        ratio = f"{rate / (base['docs'] / base['seconds']):.2f}x" if base else ""
        gpu = f" (GPU {run['peak_gpu_mib']:.0f})" if run["peak_gpu_mib"] else ""
        print(f"| {run['batch_size']} | {run['docs']} | {run['seconds']:.1f} | {run['cpu_seconds']:.0f} | {rate:.2f} | "
              f"{run['peak_rss_mib']:.0f}{gpu} | {ratio} |")
    if base:
        diff = max(abs(runs[0]["scores"][t] - base["scores"][t]) for t in base["scores"])
        print(f"largest score difference between the batch sizes: {diff:.4f}")


if __name__ == "__main__":
    main()
