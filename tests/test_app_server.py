"""The server around the tabs: ports, login rate limiting, and an unreachable Hub said in seconds."""
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

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
    assert "loading the tokenizer" not in result.stdout


def test_a_closed_hub_port_is_reported_at_once(tmp_path):
    result, took = _load_in_subprocess(LOAD_MODEL, f"http://127.0.0.1:{free_port()}", tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert float(result.stdout.split("ELAPSED", 1)[1].split()[0]) < 15
    assert "the Hugging Face Hub is not reachable" in result.stdout
