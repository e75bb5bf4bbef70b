"""Fixtures shared by the test modules: generated data, tiny models, a launched app, a browser."""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.dolly_data import make_records, write_jsonl

# The app keeps curation decisions in the user's own data folder (dolly.curation); every app a test
# starts, in-process or as `python app.py`, keeps them in the session's own file instead.
_CURATION = tempfile.mkdtemp(prefix="dolly-test-curation-")
os.environ["DOLLY_CURATION_DB"] = os.path.join(_CURATION, "curation.sqlite3")

CHROMIUM = "/usr/bin/chromium"
# Chromium's background services try to reach Google; on a closed network they only add noise.
CHROMIUM_ARGS = [
    "--no-sandbox", "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def pytest_configure(config):
    # Apps the tests start chat through PyTorch unless a test asks for OpenVINO (tests/test_cpu_engine*.py do):
    # under `auto` every start would first convert its tiny model (seconds each, hundreds of starts), and the
    # chat tests' expectations (a looping model's length, timings of Stop) are written for one engine.
    # Set here, for a pytest run only: benchmarks import this module's helpers, and their apps must run as a
    # user's do (bench/chat_cpu.py's "default" app ran PyTorch through this variable).
    os.environ.setdefault("DOLLY_CPU_ENGINE", "torch")


@pytest.fixture(scope="session")
def dolly_records():
    return make_records(400, seed=0)


@pytest.fixture(scope="session")
def dolly_jsonl(tmp_path_factory, dolly_records) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "dolly.jsonl", dolly_records)


# The Chat tab loads its model in the background; a missing local folder fails at once, offline,
# instead of retrying the unreachable Hub. Tests of the Explorer alone start the app with it.
NO_MODEL = ["--model", "/nonexistent/dolly-model"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve(*argv, dataset=None):
    """The app as `python app.py ARGV` starts it (build_app, then launch with app.py's own options and
    --auth), on a free local port, without blocking. Its URL is demo.local_url; close it with demo.close().
    `dataset`: an Explorer DatasetLoader to use instead of loading --data (tests that gate or pre-load it)."""
    import app

    args = app.parse_args([str(arg) for arg in argv])
    demo = app.build_app(args, dataset=dataset)
    demo.queue().launch(server_name="127.0.0.1", server_port=free_port(), auth=args.auth, prevent_thread_lock=True,
                        quiet=True, **app.launch_options(args))
    return demo


ROOT = Path(__file__).resolve().parents[1]


def start_app(*argv, env: dict | None = None, **popen) -> tuple[subprocess.Popen, str]:
    """`python app.py ARGV --port N` in its own process, as people run it (its own GIL: a request the
    test sends meets only the server's own work). Returns (the process, its URL) at once; the caller
    waits for the state it needs. Stop it with stop_app."""
    port = free_port()
    popen = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, **popen}
    process = subprocess.Popen([sys.executable, "app.py", *map(str, argv), "--port", str(port)], cwd=ROOT,
                               env={**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", **(env or {})}, **popen)
    return process, f"http://127.0.0.1:{port}/"


def train_briefly(base_model, data, output_dir) -> subprocess.CompletedProcess:
    """A real `python -m train` of two steps on `data` (a file `--data` takes, or a list of them to mix),
    offline: does a file train as it is? Returns the finished process (stdout/stderr as text)."""
    files = list(data) if isinstance(data, (list, tuple)) else [data]
    return subprocess.run([sys.executable, "-m", "train", "--base-model", base_model, "--data", *files, "--output-dir",
                           output_dir, "--max-length", "256", "--test-size", "8", "--per-device-batch-size", "4",
                           "--max-steps", "2", "--warmup-steps", "0", "--samples-per-category", "0", "--save-steps", "100"],
                          cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600)


def stop_app(process: subprocess.Popen) -> None:
    """Stop an `app.py` process as Ctrl-C would, and for good if it does not go within 30 s."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def explorer_url(dolly_jsonl):
    """The app serving the test data, no model: for tests of the Explorer."""
    demo = serve("--data", dolly_jsonl, *NO_MODEL)
    yield demo.local_url
    demo.close()


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium driven by Playwright. Skipped where Chromium is not installed, except in CI,
    where a missing browser is a broken set-up and must fail, not hide."""
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        message = f"{CHROMIUM} not found: install it with `apt-get install -y chromium`"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def open_chat(browser):
    """open_chat(url, size=WIDE, status="is ready"): a new page at `url` once the Chat tab's status line says
    `status` (every page it opened is closed after the test)."""
    from playwright.sync_api import expect

    from tests.browser import page_opener

    def ready(page, status="is ready"):
        expect(page.locator("#chat-status")).to_contain_text(status)

    with page_opener(browser, ready) as open_:
        yield open_


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    yield page
    context.close()


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_CURATION, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_server():
    """A throwaway PostgreSQL server for one test module (tests/postgres.py); skipped where none is installed."""
    from tests import postgres

    why = postgres.unavailable()
    if why:
        pytest.skip(why)
    server = postgres.Server()
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request, tmp_path):
    """Where a curation store lives, for tests run on both backends: a new SQLite file, or the module's
    PostgreSQL server (shared by the module's tests: each uses its own dataset keys or writer names)."""
    if request.param == "sqlite":
        return str(tmp_path / "store" / "curation.sqlite3")
    return request.getfixturevalue("pg_server").url


def run_threads(target, count: int) -> None:
    """`target(i)` for i in range(count), each in its own thread, all started before any is joined."""
    import threading

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def killed_after_confirming(script: str, *argv: str) -> str:
    """Run `python -c script *argv` until it prints its first line (a save it confirms), kill -9 it right
    there, and return that line: what a crash just after a confirmed write leaves is then checked by the caller."""
    process = subprocess.Popen([sys.executable, "-c", script, *argv], cwd=Path(__file__).resolve().parents[1],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("confirmed"), process.stderr.read()
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL
    return line.strip()


def kill_once_begun(code: str, root: Path, env: dict) -> None:
    """Run the Python `code` in a fresh process (from the repository) and SIGKILL it as soon as a temporary file or
    folder (`*.tmp-*`) appears in `root`: a conversion killed half-way."""
    import signal
    import time

    process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env})
    try:
        while not (root.is_dir() and any(root.glob("*.tmp-*"))):  # the conversion has begun
            assert process.poll() is None, "the conversion ended before it could be killed"
            time.sleep(0.01)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def chat_once_loaded(url: str, message: str, timeout: float = 180) -> str:
    """/chat's answer to `message` from the app at `url`, asked again while the model is still loading."""
    import time

    from gradio_client import Client

    client = Client(url, verbose=False)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return client.predict(message, api_name="/chat")
        except Exception as error:
            if "still loading" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
