"""What the store benchmarks share (bench/curate.py's editors, bench/contributions.py's writers): a store
on each backend for the run, many savers at once as threads or processes, and the latency summary."""
import concurrent.futures
import contextlib
import multiprocessing
import os
import shutil
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def percentiles(took: list[float]) -> str:
    import numpy as np

    ms = np.asarray(took) * 1000
    return (f"p50 {np.percentile(ms, 50):.2f} ms, p95 {np.percentile(ms, 95):.2f} ms, p99 {np.percentile(ms, 99):.2f} ms, "
            f"max {ms.max():.1f} ms")


@contextlib.contextmanager
def store_location(backend: str):
    """A new store's location for the run: an SQLite file in a temporary folder on this machine's disk
    (beside the checkout, not a tmpfs, so fsync costs what it costs), or a PostgreSQL server started for the
    run (tests/postgres.py). None (and the reason printed) when PostgreSQL is not installed."""
    if backend == "sqlite":
        folder = tempfile.mkdtemp(prefix="dolly-bench-store-", dir=str(ROOT.parent) if os.access(ROOT.parent, os.W_OK) else None)
        try:
            yield str(Path(folder) / "curation.sqlite3")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    elif backend == "postgresql":
        from tests import postgres

        why = postgres.unavailable()
        if why:
            print(f"\n{backend}: not measured ({why})")
            yield None
            return
        server = postgres.Server()
        try:
            yield server.url
        finally:
            server.stop()
    else:
        raise SystemExit(f"--store: unknown backend {backend!r}; use sqlite, postgresql")


def _call(job):
    run, *args = job
    return run(*args)


def concurrently(mode: str, location: str, run, jobs: list[tuple], warm: list[tuple]) -> tuple[list[float], float]:
    """`run(location, *args)` for each of `jobs` at once, as threads of one process sharing one store (how one
    `python app.py` serves many people) or as processes with a store each (app replicas on one database,
    first warmed with `warm` so imports are not timed). `run` returns the seconds of each of its saves; the
    answer is all of them and the wall time."""
    from dolly.curation import open_store

    shared = None
    if mode == "threads":
        shared = open_store(location)
        pool = concurrent.futures.ThreadPoolExecutor(len(jobs))
        futures = [pool.submit(run, location, *args, store=shared) for args in jobs]
    else:
        pool = concurrent.futures.ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("spawn"))
        list(pool.map(_call, [(run, location, *args) for args in warm]))
        futures = [pool.submit(_call, (run, location, *args)) for args in jobs]
    started = time.perf_counter()
    took = [t for future in futures for t in future.result()]
    wall = time.perf_counter() - started
    pool.shutdown()
    if shared is not None:
        shared.close()
    return took, wall
