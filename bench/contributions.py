"""Contribution save latency (dolly/contributions.py) with 20 writers at once, on SQLite and PostgreSQL.

    python bench/contributions.py                         # 20 writers x 25 saves, both backends
    python bench/contributions.py --store sqlite --writers 20 --saves 25

Each writer saves its own new records (dolly.contributions.save, a fresh draft key each, the checks
included) and then saves its last draft again (the double-click: answered from the key, nothing added).
Writers as threads of one app (one store, its connection pool: how one `python app.py` serves 20 people)
and as processes (one store each: app replicas on one database). Baseline, same run: 1 writer alone.
SQLite: a file in a temporary folder on this machine's disk (WAL, synchronous=FULL: each save waits for
fsync). PostgreSQL: Debian's server started for the run (tests/postgres.py), unix socket, fsync on.
Prints p50/p95/p99/max per save and checks that every record was kept exactly once.
"""
import argparse
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.curate import cpu_model  # noqa: E402
from bench.store_load import concurrently, percentiles, store_location  # noqa: E402


def writer(location: str, author: str, saves: int, store=None) -> list[float]:
    from dolly import contributions as contrib
    from dolly.curation import open_store

    own = store is None
    store = open_store(location) if own else store
    contrib.contributions(store, author="")  # tables ready before the clock
    took, key = [], None
    try:
        for i in range(saves):
            key = str(uuid.uuid4())
            record = {"instruction": f"{author} asks question number {i}, please answer?", "context": "",
                      "response": "An answer of a few words.", "category": "open_qa"}
            started = time.perf_counter()
            contrib.save(store, record, key=key, author=author)
            took.append(time.perf_counter() - started)
        started = time.perf_counter()
        assert not contrib.save(store, record, key=key, author=author).new  # the double-click
        took.append(time.perf_counter() - started)
    finally:
        if own:
            store.close()
    return took


def bench(backend: str, writers: int, saves: int) -> None:
    import numpy as np

    from dolly import contributions as contrib
    from dolly.curation import open_store

    with store_location(backend) as location:
        if location is None:
            return
        with open_store(location) as store:
            contrib.contributions(store)
        print(f"\n{backend}: {writers} writers x {saves} saves each (+1 repeated save each)", flush=True)
        one = writer(location, f"solo-{uuid.uuid4().hex[:8]}", saves)
        print(f"  1 writer (baseline): {percentiles(one)}")
        for mode in ("threads", "processes"):
            run = uuid.uuid4().hex[:8]
            took, wall = concurrently(mode, location, writer, [(f"{run}-{k}", saves) for k in range(writers)],
                                      warm=[(f"warm-{run}-{k}", 1) for k in range(writers)])
            with open_store(location) as store:
                kept = [c for c in contrib.contributions(store) if c.author.startswith(f"{run}-")]
            ok = len(kept) == writers * saves and len({c.instruction for c in kept}) == writers * saves
            print(f"  {writers} writers as {mode}: {percentiles(took)}; {len(took) / wall:.0f} saves/s; p95 "
                  f"{np.percentile(took, 95) / np.percentile(one, 95):.1f}x the 1-writer p95; {len(kept):,} records kept "
                  f"for {writers * saves:,} new saves ({'each exactly once' if ok else 'MISMATCH'})", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="sqlite,postgresql")
    parser.add_argument("--writers", type=int, default=20)
    parser.add_argument("--saves", type=int, default=25, help="new records per writer")
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}, {os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f}", flush=True)
    for backend in (b.strip() for b in args.store.split(",") if b.strip()):
        bench(backend, args.writers, args.saves)


if __name__ == "__main__":
    main()
