"""Curation benchmark: quality-signal time (explorer/signals.py) at dolly-15k size and at 1,000,000 rows.

    python bench/curate.py                      # 15,011 and 1,000,000 rows
    python bench/curate.py --sizes 15011        # one size
    python bench/curate.py --no-baseline        # skip the slow baselines

Data: tests/dolly_data.make_records (eight categories, ~800 characters per row, a third with a context),
as bench/explorer.py uses, in blocks of 15,011 rows with their own seeds. Its text is random words from
a 40-word list, the hard case for near-duplicate search (every record shares many 5-character shingles
with every other, so LSH buckets are crowded) and meaningless to the language model. Each size runs
in its own process, so peak memory is that size's alone. Per size: wall and CPU seconds of `compute`
(all signals but too_long), each signal's share, peak RSS; then too_long alone (token counting with
the real Pythia tokenizer at --tokenizer, --max-length 1024), when that folder exists.

Baselines, same run, 15k rows only: the duplicate signal done the obvious way with datasketch
(one MinHash per record, update_batch over its shingles, MinHashLSH insert and query), and token
counting the way training does it (train.data.tokenize_record, one record at a time).

Target (issue 16): signals over 15k rows take <= 3 s; over 1M rows they run in the background.

The curation store (dolly/curation.py), `--store sqlite,postgresql` (run after the signals; `--sizes ""`
skips those): save latency with 1 editor (the baseline, same run) and with 8 concurrent editors, each
saving its own records in turn through edit, accept, exclude and undo, each save naming the version it
opened. Editors as threads of one app (one store, its connection pool: how one `python app.py` serves
them) and as processes (one store each: app replicas sharing one database). SQLite: a file in a
temporary folder on this machine's disk (WAL, synchronous=FULL: every save waits for fsync). PostgreSQL:
Debian's server started for the run in a temporary folder (tests/postgres.py), over a unix socket, fsync
and synchronous_commit on (the defaults).
"""
import argparse
import json
import multiprocessing
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TOKENIZER = ROOT.parent / "shared" / "data" / "pythia-tokenizer"

from bench.store_load import concurrently, percentiles, store_location  # noqa: E402


def frame_of(rows: int):
    import pandas as pd

    from tests.dolly_data import make_records

    records = []
    for block, start in enumerate(range(0, rows, 15011)):
        records += make_records(min(15011, rows - start), seed=block, chars_per_row=800)
    return pd.DataFrame(records)


def timed(fn, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def child(rows: int, tokenizer_dir: str, max_length: int, baseline: bool, queue) -> None:
    from explorer import signals

    frame = frame_of(rows)
    signals.compute(frame.head(200))  # imports (datasketch, scipy, fastText model): once per process
    updates = []
    result, wall, cpu = timed(signals.compute, frame, progress=lambda f, desc="": updates.append(f))
    out = {"rows": rows, "wall_s": wall, "cpu_s": cpu, "per_signal_s": result.seconds, "progress_updates": len(updates),
           "counts": result.counts(), "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if Path(tokenizer_dir, "tokenizer.json").exists():
        from transformers import AutoTokenizer

        from dolly.prompt import add_special_tokens

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        add_special_tokens(tokenizer)
        counts, wall, cpu = timed(signals.token_counts, tokenizer, frame)
        out["too_long"] = {"wall_s": wall, "cpu_s": cpu, "over": int((counts > max_length).sum()), "max_length": max_length}
        if baseline and rows <= 20_000:
            from train.data import tokenize_record

            _, wall, cpu = timed(lambda: [len(tokenize_record(tokenizer, *r)["input_ids"]) for r in
                                          frame[["instruction", "context", "response"]].itertuples(index=False)])
            out["too_long"]["baseline_tokenize_record_wall_s"] = wall
    if baseline and rows <= 20_000:
        out["duplicate_baseline_wall_s"] = datasketch_baseline(frame)
    queue.put(out)


def datasketch_baseline(frame) -> float:
    """The duplicate signal's near-duplicate half the obvious way: one datasketch MinHash per record."""
    from datasketch import MinHash, MinHashLSH

    from explorer import signals

    started = time.perf_counter()
    norm = signals._normalised(signals._strings(frame["instruction"] + " " + frame["context"]))
    texts = [t[: signals.NEAR_CHARS].encode() for t in norm.to_pylist()]
    permutations = MinHash(num_perm=signals.NUM_PERM, seed=1, scheme="affine32").permutations
    lsh = MinHashLSH(num_perm=signals.NUM_PERM, params=signals.LSH_BANDS)
    sketches = []
    for row, text in enumerate(texts):
        m = MinHash(num_perm=signals.NUM_PERM, scheme="affine32", permutations=permutations)
        m.update_batch([text[i:i + signals.SHINGLE] for i in range(len(text) - signals.SHINGLE + 1)])
        lsh.insert(row, m)
        sketches.append(m)
    pairs = sum(1 for row, m in enumerate(sketches) for other in lsh.query(m)
                if other > row and m.jaccard(sketches[other]) >= signals.NEAR_THRESHOLD)
    del pairs
    return time.perf_counter() - started


# -- the curation store ------------------------------------------------------------------------------
def editor(location: str, dataset: str, first_row: int, saves: int, store=None) -> list[float]:
    """One editor's saves on its own records (rows first_row..first_row+9), cycling through edit, accept,
    exclude and undo, each naming the version it opened; the seconds each save took."""
    from dolly.curation import open_store

    own = store is None
    store = open_store(location) if own else store
    versions, took = {}, []
    for i in range(saves):
        row = first_row + i % 10
        version = versions.get(row, 0)
        step = (i // 10) % 4
        started = time.perf_counter()
        if step == 0:
            state = store.edit(dataset, row, version, {"response": f"response {i} of editor {first_row}"}, "bench")
        elif step == 1:
            state = store.accept(dataset, row, version, "bench")
        elif step == 2:
            state = store.exclude(dataset, row, version, "bench", "bench")
        else:
            state = store.undo(dataset, row, version, "bench")
        took.append(time.perf_counter() - started)
        versions[row] = state.version
    if own:
        store.close()
    return took


def store_bench(backend: str, editors: int, saves: int) -> None:
    import uuid

    import numpy as np

    from dolly.curation import open_store

    with store_location(backend) as location:
        if location is None:
            return
        open_store(location).close()  # tables created before the clock starts
        print(f"\nstore {backend}: {editors} editors x {saves} saves each (edit/accept/exclude/undo in turn)")
        one = editor(location, uuid.uuid4().hex, 0, saves)
        print(f"  1 editor (baseline): {percentiles(one)}; {len(one) / sum(one):.0f} saves/s")
        for mode in ("threads", "processes"):
            dataset = uuid.uuid4().hex
            took, wall = concurrently(mode, location, editor, [(dataset, k * 10, saves) for k in range(editors)],
                                      warm=[(uuid.uuid4().hex, 0, 1) for _ in range(editors)])
            with open_store(location) as store:
                kept = sum(len(store.history(dataset, row)) for row in range(editors * 10))
            ratio = np.percentile(took, 95) / np.percentile(one, 95)
            print(f"  {editors} editors as {mode}: {percentiles(took)}; {len(took) / wall:.0f} saves/s; p95 "
                  f"{ratio:.1f}x the 1-editor p95; {kept:,} of {len(took):,} saves in the history")


def cpu_model() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="15011,1000000")
    parser.add_argument("--tokenizer", default=str(TOKENIZER))
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--no-baseline", action="store_true")
    parser.add_argument("--store", default="sqlite,postgresql", help="curation store backends to time ('' for none)")
    parser.add_argument("--editors", type=int, default=8)
    parser.add_argument("--saves", type=int, default=200, help="saves per editor")
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}", flush=True)
    context = multiprocessing.get_context("spawn")
    for rows in (int(s) for s in args.sizes.split(",") if s.strip()):
        queue = context.Queue()
        process = context.Process(target=child, args=(rows, args.tokenizer, args.max_length, not args.no_baseline, queue))
        process.start()
        out = queue.get()
        process.join()
        per = ", ".join(f"{k} {v:.2f}" for k, v in out["per_signal_s"].items())
        print(f"\n{rows:,} rows: signals {out['wall_s']:.2f} s wall, {out['cpu_s']:.2f} s CPU "
              f"(target at 15k: <= 3 s); peak RSS {out['peak_rss_mib']:.0f} MiB; {out['progress_updates']} progress updates")
        print(f"  per signal (s): {per}")
        print(f"  flagged: {json.dumps(out['counts'])}")
        if "duplicate_baseline_wall_s" in out:
            ours = out["per_signal_s"]["duplicate"]
            print(f"  duplicate: datasketch one record at a time {out['duplicate_baseline_wall_s']:.2f} s vs ours "
                  f"{ours:.2f} s: {out['duplicate_baseline_wall_s'] / ours:.1f}x")
        if "too_long" in out:
            t = out["too_long"]
            line = f"  too_long (token counts, real Pythia tokenizer): {t['wall_s']:.2f} s wall, {t['cpu_s']:.2f} s CPU; " \
                   f"{t['over']:,} over {t['max_length']}"
            if "baseline_tokenize_record_wall_s" in t:
                line += (f"; train.data.tokenize_record one by one {t['baseline_tokenize_record_wall_s']:.2f} s: "
                         f"{t['baseline_tokenize_record_wall_s'] / t['wall_s']:.1f}x")
            print(line)
        else:
            print(f"  too_long: not measured (no tokenizer at {args.tokenizer})")
    for backend in (b.strip() for b in args.store.split(",") if b.strip()):
        store_bench(backend, args.editors, args.saves)
    print(f"\nload average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
