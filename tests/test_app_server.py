"""The server around the tabs: ports and environment settings checked at start, the login (rate limited,
and required on every route), an unreachable Hub said in seconds, and a clean stop on Ctrl-C or SIGTERM."""
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from gradio_client import Client

from dolly.login_limit import MAX_FAILURES
from tests.conftest import NO_MODEL, free_port, serve

ROOT = Path(__file__).resolve().parents[1]


def run_app(*flags, env=None, timeout=120):
    return subprocess.run([sys.executable, "app.py", *flags], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("flags, env", [(["--port", "70000"], {}), (["--port", "-1"], {}), (["--port", "0"], {}),
                                        ([], {"DOLLY_PORT": "65536"})])
def test_a_port_out_of_range_is_a_usage_error(flags, env):
    result = run_app(*flags, env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "--port (or DOLLY_PORT) must be a port number from 1 to 65535" in result.stderr


def test_a_busy_port_names_the_port_and_the_fix(dolly_jsonl):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_app("--data", str(dolly_jsonl), "--port", str(port), *NO_MODEL,
                         env={"GRADIO_ANALYTICS_ENABLED": "False"})
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"cannot listen on 127.0.0.1:{port}: the port is in use" in result.stderr
    assert "--port" in result.stderr and "Traceback" not in result.stderr


def _login(url, password):
    data = urllib.parse.urlencode({"username": "alice", "password": password}).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{url}login", data=data, method="POST"), timeout=30) as answer:
            return answer.status
    except urllib.error.HTTPError as error:
        return error.code


def test_failed_logins_are_rate_limited_per_client(dolly_jsonl):
    from explorer.loader import DatasetLoader

    demo = serve("--data", dolly_jsonl, "--auth", "alice:s3cret", *NO_MODEL, dataset=DatasetLoader(str(dolly_jsonl)))
    try:
        url = demo.local_url
        assert _login(url, "s3cret") == 200  # the right password works
        codes = [_login(url, f"guess{i}") for i in range(MAX_FAILURES + 20)]
        assert codes[:MAX_FAILURES] == [400] * MAX_FAILURES  # Gradio's own "incorrect credentials"
        assert set(codes[MAX_FAILURES:]) == {429}  # then refused without checking the password
        assert _login(url, "s3cret") == 429  # not even the right one gets through during the wait
    finally:
        demo.close()


def _load_in_subprocess(code: str, hub_url: str, tmp_path) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub_url,
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    return result, time.monotonic() - started


LOAD_MODEL = """
import time
from space.model import ModelLoader
loader = ModelLoader("databricks/dolly-v2-3b", "cpu").start()
assert loader.wait(240)
print("ELAPSED", round(loader.elapsed, 1))
print(loader.status())
"""

LOAD_DATA = """
import time
from explorer.loader import DatasetLoader
loader = DatasetLoader("databricks/databricks-dolly-15k").start()
assert loader.wait(240)
print("ELAPSED", round(loader.elapsed, 1))
print(loader.status())
"""


@pytest.mark.parametrize("code, what", [(LOAD_MODEL, "model"), (LOAD_DATA, "dataset")])
def test_a_silent_hub_is_reported_within_seconds_with_the_offline_form(tmp_path, code, what):
    # A Hub that accepts connections and never answers (a black-holed network): the Hub client alone
    # waits and retries for a minute or more; the app must say within seconds what is wrong and what to do.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        result, _ = _load_in_subprocess(code, f"http://127.0.0.1:{silent.getsockname()[1]}", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    elapsed = float(result.stdout.split("ELAPSED", 1)[1].split()[0])
    assert elapsed < 15, result.stdout  # the check itself waits 3 s; generous for a busy machine
    assert "the Hugging Face Hub is not reachable" in result.stdout
    assert "hf download" in result.stdout and "is not in this machine's cache" in result.stdout
    assert ("--model ./dolly-v2-3b" if what == "model" else "python app.py --data") in result.stdout
    # The folder the README names too.
    assert ("--local-dir ./dolly-v2-3b`" if what == "model" else "--local-dir ./dolly-15k`") in result.stdout
    assert "loading the tokenizer" not in result.stdout


def test_a_closed_hub_port_is_reported_at_once(tmp_path):
    result, took = _load_in_subprocess(LOAD_MODEL, f"http://127.0.0.1:{free_port()}", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(result.stdout.split("ELAPSED", 1)[1].split()[0]) < 15
    assert "the Hugging Face Hub is not reachable" in result.stdout


# -- environment settings: checked at start like their flags -------------------------------------
BAD_SETTINGS = [
    ("DOLLY_MAX_NEW_TOKENS", "-5", "a whole number from 2 to 1,000,000"),  # crashed building the slider
    ("DOLLY_MAX_NEW_TOKENS", "1", "a whole number from 2 to 1,000,000"),
    ("DOLLY_MAX_PROMPT_TOKENS", "abc", "a whole number from 1 to 1,000,000"),  # was a ValueError traceback
    ("DOLLY_MAX_PROMPT_TOKENS", "2.5", "a whole number from 1 to 1,000,000"),
    ("DOLLY_BACKEND_TIMEOUT", "nan", "a number from 1 to 86,400"),
    ("DOLLY_ZERO_GPU_SECONDS", "0", "a whole number from 1 to 86,400"),
    ("DOLLY_SHARE", "banana", "one of 1, true, yes, on (on) or 0, false, no, off or empty (off)"),
    ("DOLLY_DTYPE", "f8", "must be one of auto, float32, bfloat16, float16"),
    ("DOLLY_DEVICE", "gpu", "must be one of auto, cpu, cuda, mps or cuda:N"),
    ("DOLLY_CONCURRENCY", "abc", "must be a whole number, 1 or more"),
    ("DOLLY_PORT", "80.5", "must be a port number from 1 to 65535"),
    ("DOLLY_QUANTIZE", "int3", "must be one of auto, none, int8, int4"),
    ("DOLLY_BACKEND", "gpu-host:8000", "must be an http(s) URL"),
    ("DOLLY_AUTH", "alice", "must be USER:PASSWORD"),
    ("DOLLY_CPU_ENGINE", "gpu", "must be one of auto, llamacpp, openvino, torch"),
    ("DOLLY_CURATION_DB", "/", "is a folder; give the store's file"),
    ("DOLLY_CURATION_DB", "mysql://db/curation", "takes a file path (SQLite) or a postgresql:// URL"),
]


@pytest.mark.parametrize("name, value, accepted", BAD_SETTINGS)
def test_a_bad_environment_setting_is_a_usage_error_before_anything_loads(name, value, accepted):
    result = subprocess.run([sys.executable, "-X", "importtime", "app.py"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120, env={**os.environ, name: value})
    messages = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert result.returncode == 2, result.stderr[-3000:]
    assert name in "\n".join(messages) and accepted in "\n".join(messages), messages
    assert "Traceback" not in result.stderr
    # It stopped before the heavy imports (gradio, torch, pandas' dataset loading has not begun).
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert imported and not imported & {"gradio", "torch", "transformers"}, sorted(imported & {"gradio", "torch"})
    assert "Loading dataset" not in result.stdout


def test_every_environment_setting_the_app_reads_is_checked_at_start():
    """A new os.environ read in app.py, space/, explorer/ or dolly/ must come with a start-up check:
    either a setting of dolly/settings.py, a flag's variable app.py checks, or one that takes any text."""
    from dolly.settings import SETTINGS

    read = set()
    for path in [ROOT / "app.py", *(ROOT / "space").glob("*.py"), *(ROOT / "explorer").glob("*.py"),
                 *(ROOT / "dolly").glob("*.py")]:
        text = path.read_text()
        read |= set(re.findall(r"""(?:environ\.get|getenv|environ\[|\benv)\(\s*["']([A-Z0-9_]+)["']""", text))
        read |= set(re.findall(r"""(?:setting|switch)\(\s*["']([A-Z0-9_]+)["']""", text))
    checked_with_flags = {n for n, *_ in BAD_SETTINGS}
    any_text = {"DOLLY_DATA", "DOLLY_MODEL", "DOLLY_HOST", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT",
                "DOLLY_BACKEND_MODEL", "DOLLY_BACKEND_KEY", "DOLLY_API_KEY"}
    others = {"HF_HUB_OFFLINE": "read by huggingface_hub itself", "SPACES_ZERO_GPU": "the `spaces` package's own rule",
              "XDG_DATA_HOME": "the XDG convention: any folder (a relative one is ignored, as the spec says)",
              "LOCALAPPDATA": "Windows' own", "DOLLY_CACHE": "any folder; a conversion that cannot write there "
                                                            "leaves the chat on the torch path, saying why"}
    unchecked = read - set(SETTINGS) - checked_with_flags - any_text - set(others)
    assert read and not unchecked, f"environment settings read but not checked at start: {sorted(unchecked)}"
    assert set(SETTINGS) <= checked_with_flags  # each has a bad value in the test above


def test_help_states_the_int4_group_size_the_code_uses():
    from space.quantize import INT4_GROUP_SIZES

    result = run_app("--help", timeout=60)
    assert result.returncode == 0
    assert f"int4 (groups of {INT4_GROUP_SIZES[0]}:" in " ".join(result.stdout.split())


# -- stopping: Ctrl-C and SIGTERM close the app the same way -------------------------------------
def _lines(stream, into: queue.Queue):
    for line in stream:
        into.put(line)
    into.put(None)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_remove_the_apps_exports_and_exit_cleanly(tmp_path, dolly_jsonl, stop):
    from tests.tiny_model import save_tiny_model

    model = save_tiny_model(tmp_path / "model", dolly_tokens=True)
    port = free_port()
    env = {**os.environ, "GRADIO_TEMP_DIR": str(tmp_path / "gradio"), "GRADIO_ANALYTICS_ENABLED": "False",
           "PYTHONUNBUFFERED": "1"}
    env.pop("DOLLY_SHARE", None)
    process = subprocess.Popen([sys.executable, "app.py", "--data", str(dolly_jsonl), "--model", str(model),
                                "--port", str(port)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    output: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(process.stdout, output), daemon=True).start()
    seen = []
    try:
        deadline = time.monotonic() + 300
        while True:  # until the server answers (the process printing as it goes)
            assert process.poll() is None and time.monotonic() < deadline, "".join(seen)
            while not output.empty():
                seen.append(output.get() or "")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=10):
                    break
            except OSError:
                time.sleep(0.2)
        client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=str(tmp_path / "downloads"))
        deadline = time.monotonic() + 120
        while True:  # the dataset loads in the background
            try:
                client.predict(["open_qa"], "", "csv", api_name="/export")
                break
            except Exception as error:
                assert "still loading" in str(error) and time.monotonic() < deadline, str(error)
                time.sleep(0.2)
        exports = tmp_path / "gradio" / "dolly-exports"
        assert list(exports.rglob("dolly-*-rows.csv"))
        process.send_signal(stop)
        assert process.wait(timeout=120) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    while (line := output.get(timeout=60)) is not None:
        seen.append(line)
    seen = [line for line in seen if line]
    log = "".join(seen)
    assert [p for p in exports.rglob("*")] == [], log[-3000:]  # every export, and the app's folder, gone
    assert "Traceback" not in log, log[-3000:]
    # The app's own words about sharing, not Gradio's "set `share=True` in `launch()`".
    assert "share=True" not in log and "--share (or DOLLY_SHARE=1)" in log, log[-3000:]


# -- under --auth, nothing without the login ----------------------------------------------------
# What may answer without a login, and why: the login page and what it loads (seen in a real browser,
# test_the_login_page_loads_and_logs_in_under_auth), the login form, logging out, and the one call
# launch() makes to its own server, without a cookie, to start the queue.
OPEN_WITHOUT_LOGIN = {
    ("GET", "/"), ("HEAD", "/"), ("POST", "/login"), ("POST", "/login/"), ("GET", "/logout"),
    ("GET", "/assets/{path:path}"), ("GET", "/static/{path:path}"), ("GET", "/favicon.ico"), ("GET", "/theme.css"),
    ("GET", "/gradio_api/theme.css"), ("GET", "/manifest.json"), ("GET", "/pwa_icon"), ("GET", "/pwa_icon/{size}"),
    ("GET", "/robots.txt"), ("GET", "/gradio_api/startup-events"),
}


def served_routes(app) -> list[tuple[str, str]]:
    """(method, path template) of every HTTP route the launched app serves, routers included."""
    from fastapi.routing import _IncludedRouter

    found = []

    def walk(routes):
        for route in routes:
            if isinstance(route, _IncludedRouter):
                walk(route.effective_candidates())
                continue
            methods = getattr(getattr(route, "original_route", route), "methods", None) or ["GET"]
            found.extend((method, route.path) for method in methods)

    walk(app.routes)
    return sorted(set(found))


def _request(url: str, method: str, cookie: str | None = None) -> tuple[int, bytes]:
    headers = {"Cookie": cookie} if cookie else {}
    data = b"{}" if method in ("POST", "PUT", "PATCH") else None
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=60) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_every_route_but_the_login_pages_needs_the_login(dolly_jsonl):
    from explorer.loader import DatasetLoader

    demo = serve("--data", dolly_jsonl, "--auth", "alice:s3cret", *NO_MODEL, dataset=DatasetLoader(str(dolly_jsonl)))
    try:
        base = demo.local_url.rstrip("/")
        routes = served_routes(demo.server_app)
        assert len(routes) > 50 and ("GET", "/openapi.json") in routes and ("POST", "/gradio_api/upload") in routes
        answered = {}
        for method, template in routes:
            path = re.sub(r"\{[^}]+\}", "x", template)  # every path parameter filled in
            status, body = _request(base + path, method)
            answered[(method, template)] = status
            if (method, template) in OPEN_WITHOUT_LOGIN:
                continue
            assert status in (401, 403), (method, template, status, body[:200])
        assert answered[("GET", "/")] == 200 and b'"auth_required"' in _request(base + "/", "GET")[1]
        # /v1 answers with its own rule: no key configured, so closed under --auth, in OpenAI's error shape.
        assert answered[("GET", "/v1/models")] == 401
        # With the login, the same routes answer: the rule is the login, not a closed door.
        client = Client(demo.local_url, auth=("alice", "s3cret"), verbose=False)
        rows, total = client.predict([], "", 1, api_name="/explore")
        assert total == 400
        cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
        status, body = _request(base + "/openapi.json", "GET", cookie)
        assert status == 200 and b"openapi" in body
    finally:
        demo.close()


def test_the_login_page_loads_and_logs_in_under_auth(page, dolly_jsonl):
    from explorer.loader import DatasetLoader

    demo = serve("--data", dolly_jsonl, "--auth", "alice:s3cret", *NO_MODEL, dataset=DatasetLoader(str(dolly_jsonl)))
    try:
        failed = []
        page.on("response", lambda response: response.status >= 400 and failed.append((response.url, response.status)))
        page.goto(demo.local_url)
        page.wait_for_selector("input[type=password]")
        assert failed == []  # everything the login page loads is open
        page.fill("input[type=text]", "alice")
        page.fill("input[type=password]", "s3cret")
        page.keyboard.press("Enter")
        page.get_by_role("tab", name="Explorer").click()
        page.wait_for_selector("#explorer-search textarea, #explorer-search input")
        assert failed == []
    finally:
        demo.close()
