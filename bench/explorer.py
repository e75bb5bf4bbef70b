"""Explorer benchmark: load time, memory and query latency at dolly-15k size and at 1,000,000 rows.

    python bench/explorer.py                 # 15,011 and 1,000,000 rows
    python bench/explorer.py --sizes 15011   # just one size

Data: tests/dolly_data.make_records (all eight categories, ~800 characters of text per row, a third
of rows with a context), written once as JSONL under --workdir and reused. Each size runs in its
own process so peak memory is that size's alone. Per size it measures:

- load: load_records (file -> DataFrame) and Index (the query structures), seconds; peak RSS;
- function: p50/p95 of one filter + search + page (Index.select + Index.page), each query new
  (random categories, a random word, a random page), so the selection cache never helps; and
  paging through one selection (cache warm). Baseline in the same run: the obvious pandas code
  (str.contains(case=False) over the three fields), whose ratio to ours is printed;
- round trip: p50/p95 of gradio_client `/explore` calls against the launched app;
- start: seconds from `python app.py --data FILE` to the first HTTP 200;
- concurrency (15k rows; --clients 16): `python app.py` serving, 16 client processes calling
  `/explore` at once against one client alone (the baseline, same run): p50/p95, calls/s, and the CPU
  each call costs in the client and in the server; then the same with gradio_client told not to load
  the CA bundle (ssl_verify=False) and with raw HTTP (one reused connection pool per client), to tell
  the client's cost from the server's; then 16 clients against an app whose Gradio queue runs all
  events at once (GRADIO_DEFAULT_CONCURRENCY_LIMIT=16), to see what the queue's limit of 1 costs.

Every client waits for the app the way a client should: the dataset loads in the background, so
`/explore` answers "The dataset is still loading" at first; clients poll until it answers.

Targets (2-core machine): 15k function p95 <= 20 ms, round trip p95 <= 100 ms; 1M function p95 <=
300 ms; start <= 8 s.
"""
import argparse
import json
import multiprocessing
import os
import random
import resource
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tests.conftest import free_port, start_app, stop_app  # noqa: E402  (needs the line above)

TARGETS = {15011: {"function_p95_ms": 20, "roundtrip_p95_ms": 100, "start_s": 8},
           1_000_000: {"function_p95_ms": 300, "start_s": 8}}
NO_MODEL = ["--model", "/nonexistent/bench-no-model"]  # the Chat tab's model is not under test


def data_file(workdir: Path, rows: int) -> Path:
    from tests.dolly_data import make_records, write_jsonl

    path = workdir / f"dolly-{rows}.jsonl"
    if not path.exists():
        started = time.perf_counter()
        records = []
        # Distinct seeds per block: a million generated rows, not a repeated sample.
        for block, start in enumerate(range(0, rows, 15011)):
            records += make_records(min(15011, rows - start), seed=block, chars_per_row=800)
        write_jsonl(path.with_suffix(".tmp"), records)
        path.with_suffix(".tmp").rename(path)
        print(f"  generated {path} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.0f} s", flush=True)
    return path


def wait_until_ready(client, timeout: float = 600) -> float:
    """Poll `/explore` until the dataset is there (it loads in the background); returns the seconds
    waited. A load that failed is an error at once, with the app's own message."""
    started = time.perf_counter()
    while True:
        try:
            client.predict([], "", 1, api_name="/explore")
            return time.perf_counter() - started
        except Exception as error:  # gradio_client's AppError; its message says which
            if "still loading" not in str(error):
                raise
            if time.perf_counter() - started > timeout:
                raise RuntimeError(f"the dataset did not load within {timeout:.0f} s: {error}") from None
            time.sleep(0.2)


def percentiles(samples):
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]
    return pick(0.50) * 1000, pick(0.95) * 1000


def queries(index, count, seed):
    from tests.dolly_data import WORDS, UNICODE_WORDS

    rng = random.Random(seed)
    vocabulary = [w for w in WORDS if len(w) > 3] + UNICODE_WORDS
    made, seen = [], set()
    while len(made) < count:
        categories = tuple(sorted(rng.sample(index.categories, rng.choice([0, 1, 2, 3]))))
        word = rng.choice(vocabulary)
        search = word if rng.random() < 0.7 else f"{word} {rng.choice(vocabulary)}"
        if rng.random() < 0.3:
            search = search.upper()
        if (categories, search.lower()) not in seen:
            seen.add((categories, search.lower()))
            made.append((list(categories), search, rng.random()))
    return made


def child(path: Path, rows: int, function_queries: int, roundtrip_calls: int) -> dict:
    """Everything that runs inside the loaded process for one size."""
    import pandas as pd

    from dolly.data import load_records
    from explorer.query import Index
    from tests.conftest import serve as serve_in_process

    out = {"rows": rows}
    started = time.perf_counter()
    frame = load_records(path, progress=False)
    out["load_records_s"] = time.perf_counter() - started
    started = time.perf_counter()
    index = Index(frame)
    out["index_s"] = time.perf_counter() - started
    baseline_frame = frame if rows <= 20_000 else None  # the pandas baseline at 1M is sampled below
    out["peak_rss_gb_after_load"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6

    # Our function: each query new.
    timings, totals = [], []
    for categories, search, where in queries(index, function_queries, seed=rows):
        started = time.perf_counter()
        selection = index.select(categories, search)
        index.page(selection, 1 + int(where * (selection.pages - 1)))
        timings.append(time.perf_counter() - started)
        totals.append(selection.total)
    out["function_p50_ms"], out["function_p95_ms"] = percentiles(timings)
    out["mean_matches"] = sum(totals) / len(totals)

    # Paging one selection (the cache holds it).
    selection = index.select([], "river")
    paging = []
    for page in random.Random(0).sample(range(1, selection.pages + 1), min(50, selection.pages)):
        started = time.perf_counter()
        index.page(index.select([], "river"), page)
        paging.append(time.perf_counter() - started)
    out["paging_p50_ms"], out["paging_p95_ms"] = percentiles(paging)

    # Baseline: plain pandas over the three fields (a few queries at 1M: each takes seconds).
    baseline_queries = queries(index, 20 if rows <= 20_000 else 3, seed=rows + 1)
    if baseline_frame is None:
        baseline_frame = frame
    base = []
    for categories, search, _ in baseline_queries:
        started = time.perf_counter()
        mask = pd.Series(True, index=baseline_frame.index) if not categories else baseline_frame["category"].isin(categories)
        hit = (baseline_frame["instruction"].str.contains(search, case=False, regex=False)
               | baseline_frame["context"].str.contains(search, case=False, regex=False)
               | baseline_frame["response"].str.contains(search, case=False, regex=False))
        baseline_frame[mask & hit].head(20).to_dict("records")
        base.append(time.perf_counter() - started)
    ours = []
    for categories, search, _ in baseline_queries:
        started = time.perf_counter()
        index.page(index.select(categories, search), 1)
        ours.append(time.perf_counter() - started)
    out["baseline_pandas_mean_ms"] = sum(base) / len(base) * 1000
    out["ours_same_queries_mean_ms"] = sum(ours) / len(ours) * 1000
    out["speedup_vs_pandas"] = sum(base) / sum(ours)
    del frame, baseline_frame

    # Round trip through gradio_client against the real app.
    if roundtrip_calls:
        from gradio_client import Client

        demo = serve_in_process("--data", path, *NO_MODEL)  # as `python app.py` launches it
        url = demo.local_url
        try:
            client = Client(url, verbose=False)
            wait_until_ready(client)  # also the connection's warm-up
            trips = []
            for categories, search, where in queries(index, roundtrip_calls, seed=rows + 2):
                started = time.perf_counter()
                client.predict(categories, search, 1, api_name="/explore")
                trips.append(time.perf_counter() - started)
            out["roundtrip_p50_ms"], out["roundtrip_p95_ms"] = percentiles(trips)
        finally:
            demo.close()
        out["echo_p50_ms"], out["echo_p95_ms"] = echo_round_trip(roundtrip_calls)
    out["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    return out


def echo_round_trip(calls: int):
    """Baseline: the same client calling a Gradio endpoint that does nothing (Gradio's own cost)."""
    import gradio as gr
    from gradio_client import Client

    with gr.Blocks() as demo:
        text, echo = gr.Textbox(), gr.Textbox()
        text.submit(lambda value: value, text, echo, api_name="echo")
    demo.queue().launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True)
    url = demo.local_url
    try:
        client = Client(url, verbose=False)
        client.predict("warm-up", api_name="/echo")
        trips = []
        for _ in range(calls):
            started = time.perf_counter()
            client.predict("x", api_name="/echo")
            trips.append(time.perf_counter() - started)
        return percentiles(trips)
    finally:
        demo.close()


def serve(path: Path, env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """`python app.py --data FILE` on a free port (with `env` added), its dataset loaded; returns
    (process, url)."""
    from gradio_client import Client

    process, url = start_app("--data", path, *NO_MODEL, env=env)
    deadline = time.perf_counter() + 300
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5):
                break
        except OSError:
            if process.poll() is not None or time.perf_counter() > deadline:
                stop(process)
                raise RuntimeError("app.py did not start")
            time.sleep(0.1)
    wait_until_ready(Client(url, verbose=False))
    return process, url


stop = stop_app


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of process `pid` so far (Linux /proc), or None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_worker(url: str, how: str, calls: int, seed: int, start, results) -> None:
    """One client process: connect, wait at the barrier `start`, make `calls` /explore calls; puts
    (latencies, this process's CPU seconds during the calls) on `results`."""
    rng = random.Random(seed)
    from tests.dolly_data import WORDS

    words = [w for w in WORDS if len(w) > 3]
    if how.startswith("gradio_client"):
        from gradio_client import Client

        # ssl_verify=False only to show where gradio_client's CPU goes: it builds a new httpx client,
        # loading the CA bundle, for every request, even over plain http (harmless here: no TLS).
        client = Client(url, verbose=False, ssl_verify="ssl_verify=False" not in how)
        call = lambda search: client.predict([], search, 1, api_name="/explore")  # noqa: E731
    else:  # raw HTTP, the connection pool reused: what a client that does not rebuild it pays
        import httpx

        http = httpx.Client(base_url=url, timeout=120)

        def call(search):
            event = http.post("gradio_api/call/explore", json={"data": [[], search, 1]}).json()["event_id"]
            body = http.get(f"gradio_api/call/explore/{event}").text
            assert "event: complete" in body, body[:300]
    call("river")  # warm-up
    start.wait()
    latencies, cpu = [], time.process_time()
    for _ in range(calls):
        search = rng.choice(words)
        began = time.perf_counter()
        call(search)
        latencies.append(time.perf_counter() - began)
    results.put((latencies, time.process_time() - cpu))


def concurrency(path: Path, clients: int, calls_alone: int = 40, calls_each: int = 10) -> dict:
    """One client alone, then `clients` at once, through gradio_client and through raw HTTP, against
    `python app.py` as shipped (Gradio's queue runs /explore one call at a time); then the same
    `clients` against an app whose events may all run at once (GRADIO_DEFAULT_CONCURRENCY_LIMIT).
    Each client is its own process, so clients share no GIL with each other or with the server."""
    # Forked after importing the clients' libraries, so starting 16 clients costs no 16 imports
    # (spawn where there is no fork).
    import gradio_client  # noqa: F401
    import httpx  # noqa: F401

    fork = "fork" in multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if fork else "spawn")
    out = {}
    for limit in (None, clients):
        process, url = serve(path, env={"GRADIO_DEFAULT_CONCURRENCY_LIMIT": str(limit)} if limit else None)
        try:
            for how in ("gradio_client", "gradio_client, ssl_verify=False", "raw HTTP"):
                for count, calls in ((1, calls_alone), (clients, calls_each)) if limit is None else ((clients, calls_each),):
                    start, results = context.Barrier(count + 1), context.Queue()
                    workers = [context.Process(target=client_worker, args=(url, how, calls, i, start, results))
                               for i in range(count)]
                    for worker in workers:
                        worker.start()
                    start.wait()
                    server_cpu, began = cpu_seconds(process.pid), time.perf_counter()
                    got = [results.get(timeout=600) for _ in workers]
                    wall = time.perf_counter() - began
                    server_cpu = None if server_cpu is None else cpu_seconds(process.pid) - server_cpu
                    for worker in workers:
                        worker.join()
                    latencies = [t for times, _ in got for t in times]
                    p50, p95 = percentiles(latencies)
                    label = f"{how}, {count} client{'s' if count > 1 else ''}" + (f", concurrency limit {limit}" if limit else "")
                    out[label] = {
                        "p50_ms": p50, "p95_ms": p95, "calls_per_s": len(latencies) / wall,
                        "client_cpu_ms_per_call": sum(cpu for _, cpu in got) / len(latencies) * 1000,
                        "server_cpu_ms_per_call": None if server_cpu is None else server_cpu / len(latencies) * 1000}
        finally:
            stop(process)
    return out


def start_time(path: Path) -> float:
    started = time.perf_counter()
    process, url = start_app("--data", path, *NO_MODEL)
    try:
        while time.perf_counter() - started < 300:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - started
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("app.py did not answer within 300 s")
    finally:
        stop(process)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[15011, 1_000_000])
    parser.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "open-dolly-bench")
    parser.add_argument("--clients", type=int, default=16,
                        help="Concurrent clients in the concurrency run (at the smallest size; 0 skips it).")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.child:
        small = args.child <= 20_000
        result = child(data_file(args.workdir, args.child), args.child, 200 if small else 40, 100 if small else 20)
        print("RESULT " + json.dumps(result), flush=True)
        return

    print(f"Explorer benchmark · {time.strftime('%Y-%m-%d %H:%M')} · {os.cpu_count()} CPUs · "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB", flush=True)
    for rows in args.sizes:
        print(f"\n== {rows:,} rows", flush=True)
        path = data_file(args.workdir, rows)
        run = subprocess.run([sys.executable, __file__, "--child", str(rows), "--workdir", str(args.workdir)],
                             capture_output=True, text=True)
        line = next((l for l in run.stdout.splitlines() if l.startswith("RESULT ")), None)
        if line is None:
            print(run.stdout[-3000:], run.stderr[-3000:])
            raise SystemExit(f"the {rows}-row run failed")
        result = json.loads(line[len("RESULT "):])
        result["start_s"] = start_time(path)
        target = TARGETS.get(rows, {})
        print(f"  load: load_records {result['load_records_s']:.2f} s + Index {result['index_s']:.2f} s; "
              f"peak RSS {result['peak_rss_gb_after_load']:.2f} GB after load, {result['peak_rss_gb']:.2f} GB overall")
        for key, label in [("function_p50_ms", "function p50"), ("function_p95_ms", "function p95"),
                           ("paging_p50_ms", "paging p50 (cached selection)"), ("paging_p95_ms", "paging p95 (cached selection)"),
                           ("roundtrip_p50_ms", "gradio_client round trip p50"), ("roundtrip_p95_ms", "gradio_client round trip p95")]:
            if key in result:
                goal = target.get(key)
                verdict = "" if goal is None else f"  (target <= {goal} ms: {'OK' if result[key] <= goal else 'MISSED'}, {result[key] / goal:.2f}x of target)"
                print(f"  {label}: {result[key]:.1f} ms{verdict}")
        if "echo_p50_ms" in result:
            print(f"  baseline: gradio_client round trip to a do-nothing endpoint, same run: p50 {result['echo_p50_ms']:.1f} ms, "
                  f"p95 {result['echo_p95_ms']:.1f} ms (ours adds {result['roundtrip_p50_ms'] - result['echo_p50_ms']:.1f} ms at p50)")
        print(f"  baseline (pandas str.contains, same queries): {result['baseline_pandas_mean_ms']:.0f} ms mean vs ours "
              f"{result['ours_same_queries_mean_ms']:.1f} ms -> {result['speedup_vs_pandas']:.0f}x faster")
        goal = target.get("start_s")
        print(f"  start (python app.py -> first HTTP 200): {result['start_s']:.1f} s"
              + ("" if goal is None else f"  (target <= {goal} s: {'OK' if result['start_s'] <= goal else 'MISSED'})"))
        print(f"  mean matches per query: {result['mean_matches']:.0f}")
        if args.clients and rows == min(args.sizes):
            print(f"  concurrency ({args.clients} client processes vs one alone; python app.py serving):", flush=True)
            for label, run in concurrency(path, args.clients).items():
                server = run["server_cpu_ms_per_call"]
                print(f"    {label}: p50 {run['p50_ms']:.0f} ms, p95 {run['p95_ms']:.0f} ms, "
                      f"{run['calls_per_s']:.1f} calls/s; CPU per call: client {run['client_cpu_ms_per_call']:.1f} ms, "
                      f"server {'n/a' if server is None else f'{server:.1f} ms'}", flush=True)


if __name__ == "__main__":
    main()
