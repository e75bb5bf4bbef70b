"""Training throughput: length-grouped batches (train/) vs the seed recipe's batching.

Same tiny GPT-NeoX, same generated dolly-shaped records, same optimizer; only the batching differs:
  seed:  random order, each batch padded to its longest record, rounded up to a multiple of 8
  ours:  train.data.grouped_order (similar lengths together), padded to the longest, no rounding
Reports the padding fraction and useful (non-pad) tokens per second of each, and their ratio.
Targets: padding <= 5%, ratio >= 1.8x.

    python bench/train.py [--records 512] [--batch-size 8] [--max-length 1024]
"""
import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from tests.dolly_data import make_records  # noqa: E402
from tests.tiny_model import save_tiny_model  # noqa: E402
from train.data import grouped_order, make_collator, padding_stats, tokenize_frame  # noqa: E402
from dolly.prompt import add_special_tokens  # noqa: E402


class Run:
    """One batching strategy: its own copy of the model and optimizer, timed step by step."""

    def __init__(self, model_dir, rows, order, batch_size, collator):
        torch.manual_seed(0)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self.model.train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.batches = [
            collator([{"input_ids": rows[i]["input_ids"], "labels": rows[i]["labels"]} for i in order[j:j + batch_size]])
            for j in range(0, len(order), batch_size)
        ]
        self.seconds = self.useful = 0

    def step(self, n, timed):
        features = self.batches[n]
        start = time.perf_counter()
        self.model(**features).loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if timed:
            self.seconds += time.perf_counter() - start
            self.useful += int(features["attention_mask"].sum())


def measure(runs, warmup=3):
    """Alternate the strategies batch by batch, so that on a shared machine both meet the same load."""
    for n in range(len(runs[0].batches)):
        for run in runs if n % 2 else reversed(runs):
            run.step(n, timed=n >= warmup)  # the first steps pay for allocations and lazy init


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads; 1 keeps timings steady on a shared machine (several threads "
                             "fighting other jobs for the cores slow down erratically)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_tiny_model(Path(tmp) / "tiny", dolly_tokens=True, hidden_size=args.hidden_size,
                                    num_layers=args.layers, max_positions=max(2048, args.max_length))
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        add_special_tokens(tokenizer)
        frame = pd.DataFrame(make_records(args.records, seed=args.seed))
        rows, dropped = tokenize_frame(tokenizer, frame, args.max_length, progress=False)
        lengths = [r["length"] for r in rows]

        seed_order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(args.seed)).tolist()
        our_order = grouped_order(lengths, args.batch_size, args.seed, epoch=0)
        runs = {
            "seed (random, pad to longest, x8)": (seed_order, make_collator(tokenizer, pad_to_multiple_of=8), 8),
            "ours (length-grouped)": (our_order, make_collator(tokenizer), None),
        }
        print(f"{len(rows)} records (dropped over {args.max_length} tokens: {sum(dropped.values())}), "
              f"lengths {min(lengths)}-{max(lengths)} tokens, mean {sum(lengths) / len(lengths):.0f}; "
              f"batch {args.batch_size}; GPT-NeoX hidden {args.hidden_size} x {args.layers} layers; "
              f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
        built = {name: Run(model_dir, rows, order, args.batch_size, collator)
                 for name, (order, collator, _) in runs.items()}
        measure(list(built.values()))
        results = {}
        for name, (order, _, multiple) in runs.items():
            pad, real = padding_stats(lengths, order, args.batch_size, multiple)
            run = built[name]
            results[name] = (pad / (pad + real), run.useful / run.seconds)
            print(f"{name:36s} padding {pad / (pad + real):6.1%}   useful tokens/s {run.useful / run.seconds:9.0f}   "
                  f"({run.seconds:.1f} s timed)")
        (seed_pad, seed_tps), (our_pad, our_tps) = results.values()
        print(f"ratio (ours / seed useful tokens/s): {our_tps / seed_tps:.2f}x   "
              f"[targets: padding <= 5% -> {'met' if our_pad <= 0.05 else 'MISSED'}; "
              f"ratio >= 1.8x -> {'met' if our_tps / seed_tps >= 1.8 else 'MISSED'}]")


if __name__ == "__main__":
    main()
