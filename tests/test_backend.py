"""`--backend URL`: app B generates through app A's /v1 (any OpenAI-compatible server would do).

A serves the tiny looping model of test_chat_api.py, so every reply's text is known from its length.
A runs in this process where the test follows A's generate() threads (Stop), and as a subprocess
where it is killed mid-reply.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from gradio_client import Client

from space import chat
from space.backend import BackendEngine
from tests.conftest import free_port, serve
from tests.generations import stop_and_check
from tests.test_chat_api import LOOP, expected
from tests.tiny_model import save_scripted_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def looping_dir(tmp_path_factory):
    return save_scripted_model(tmp_path_factory.mktemp("looping"), LOOP, loop=True,
                               hidden_size=256, num_layers=6, num_heads=8, max_positions=4096)


def wait_for_v1(url: str, model: str, deadline_s: float = 180, process=None) -> None:
    """Until `url`'s /v1 completes a token (the model has loaded), as a client would find out."""
    deadline = time.monotonic() + deadline_s
    while True:
        assert process is None or process.poll() is None, "app A exited while starting"
        try:
            answer = httpx.post(f"{url}/v1/completions", json={"model": model, "prompt": "ready?", "max_tokens": 1},
                                timeout=30)
            if answer.status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        assert time.monotonic() < deadline, f"{url} did not get ready"
        time.sleep(0.2)


def start_a(model_dir, data, port: int) -> subprocess.Popen:
    """App A as its own process (`python app.py`), so that a test can kill it."""
    command = [sys.executable, "app.py", "--model", str(model_dir), "--data", str(data),
               "--port", str(port), "--concurrency", "2"]
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    env.pop("DOLLY_API_KEY", None)
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_b(backend_url: str, data, *flags):
    demo = serve("--backend", backend_url, "--data", data, *flags)
    return demo, demo.local_url


@pytest.fixture(scope="module")
def app_a(looping_dir, dolly_jsonl):
    demo = serve("--model", looping_dir, "--data", dolly_jsonl, "--concurrency", "4")
    url = demo.local_url.rstrip("/")
    wait_for_v1(url, looping_dir.name)
    yield url
    demo.close()


@pytest.fixture(scope="module")
def app_b(app_a, dolly_jsonl):
    demo, url = start_b(f"{app_a}/v1", dolly_jsonl, "--concurrency", "4")
    yield url
    demo.close()


def test_the_status_line_names_the_backend_and_its_model(app_a, looping_dir):
    engine = BackendEngine(f"{app_a}/v1")
    assert engine.state == "loading" and f"Connecting to the backend** at {app_a}/v1" in engine.status()
    assert engine.probe()
    assert engine.status() == (f"**Backend ready:** {looping_dir.name} at {app_a}/v1, 4096-token window. "
                               "Replies are generated there.")
    wrong = BackendEngine(f"{app_a}/v1", model="databricks/dolly-v2-12b")
    assert not wrong.probe() and "does not serve 'databricks/dolly-v2-12b'" in wrong.status()
    assert f"it serves: {looping_dir.name}" in wrong.status()


def test_chat_streams_through_the_backend(app_b, looping_dir):
    client = Client(app_b, verbose=False)
    job = client.submit("Tell me more.", "Some context.", max_new_tokens=40, api_name="/chat")
    final = job.result(timeout=120)
    outputs = job.outputs()
    assert len(outputs) >= 10  # streamed from A through B, token by token
    assert all(b.startswith(a) and len(b) > len(a) for a, b in zip(outputs, outputs[1:]))
    assert final == expected(looping_dir, 40) and "###" not in final


def test_v1_of_the_front_end_answers_through_the_backend(app_b, looping_dir):
    api = openai.OpenAI(base_url=f"{app_b}v1", api_key="unused", max_retries=0, timeout=120)
    assert [m.id for m in api.models.list().data] == [looping_dir.name]
    stream = api.chat.completions.create(model=looping_dir.name, stream=True, max_tokens=25,
                                         messages=[{"role": "user", "content": "Hi"}])
    deltas = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert len(deltas) >= 5 and "".join(deltas) == expected(looping_dir, 25)


def test_stop_closes_the_stream_and_the_backend_stops_generating(app_b):
    before = chat.generation_threads()  # A runs in this process: its generate() threads are visible
    client = Client(app_b, verbose=False)
    job = client.submit("Go on forever.", max_new_tokens=1000, api_name="/chat")
    deadline = time.monotonic() + 120
    while len(job.outputs()) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop_and_check(job.cancel, before)  # A still generating after Stop in B fails here


def test_errors_of_the_backend_reach_the_chat_and_b_stays_up(app_a, app_b, looping_dir):
    client = Client(app_b, verbose=False)
    # A refuses a prompt longer than its window: B says so, in A's words.
    with pytest.raises(Exception, match=r"answered HTTP 400 while generating: The prompt is \d+ tokens"):
        client.predict("word " * 9000, max_new_tokens=5, api_name="/chat")
    api = openai.OpenAI(base_url=f"{app_b}v1", api_key="unused", max_retries=0, timeout=120)
    with pytest.raises(openai.BadRequestError, match="answered HTTP 400"):
        api.completions.create(model=looping_dir.name, prompt="word " * 9000, max_tokens=5)
    assert client.predict("Still there?", max_new_tokens=7, api_name="/chat") == expected(looping_dir, 7)


def test_a_backend_that_cannot_load_its_model_is_a_clear_message(tmp_path, dolly_jsonl):
    broken = serve("--model", tmp_path / "no-such-model", "--data", dolly_jsonl)
    broken_url = broken.local_url.rstrip("/")
    front, front_url = start_b(f"{broken_url}/v1", dolly_jsonl)
    try:
        client = Client(front_url, verbose=False)
        with pytest.raises(Exception, match=r"answered HTTP 503 while generating: Model folder not found"):
            client.predict("Hello?", max_new_tokens=5, api_name="/chat")
    finally:
        front.close()
        broken.close()


def test_backend_killed_mid_reply_then_back(looping_dir, dolly_jsonl):
    port = free_port()
    a_url = f"http://127.0.0.1:{port}"
    process = start_a(looping_dir, dolly_jsonl, port)
    front = None
    try:
        wait_for_v1(a_url, looping_dir.name, process=process)
        front, front_url = start_b(f"{a_url}/v1", dolly_jsonl)
        client = Client(front_url, verbose=False)
        job = client.submit("Go on forever.", max_new_tokens=1000, api_name="/chat")
        deadline = time.monotonic() + 120
        while len(job.outputs()) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        process.kill()  # A dies mid-reply
        process.wait(30)
        with pytest.raises(Exception, match=r"backend at .* (failed|broke|Cannot connect).*incomplete"):
            job.result(timeout=120)
        # B is still up and says what is wrong ...
        with pytest.raises(Exception, match=f"Cannot connect to the backend at {a_url}/v1"):
            client.predict("Are you there?", max_new_tokens=3, api_name="/chat")
        # ... and once A is back, the next message goes through.
        process = start_a(looping_dir, dolly_jsonl, port)
        wait_for_v1(a_url, looping_dir.name, process=process)
        assert client.predict("Back?", max_new_tokens=6, api_name="/chat") == expected(looping_dir, 6)
    finally:
        if front is not None:
            front.close()
        process.kill()
        process.wait(30)


def wait_until(condition, what: str, deadline_s: float = 60) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, f"still not {what} after {deadline_s} s"
        time.sleep(0.05)


def test_a_backend_that_comes_back_is_seen_without_a_message(looping_dir, dolly_jsonl, monkeypatch):
    from space import backend
    from space.tab import MAX_NEW_TOKENS_CAP, _tick, status_line

    monkeypatch.setattr(backend, "RECHECK_S", 0.5)
    port = free_port()
    engine = BackendEngine(f"http://127.0.0.1:{port}/v1").start()  # nothing listens there yet
    process = None
    try:
        wait_until(lambda: engine.state == "failed", "failed")
        line, timer = status_line(engine)
        assert "not answering" in line and "asks it again every 0.5 s" in line
        assert timer.active  # the Chat tab keeps polling: the line will change by itself
        *_, seen, _, _, intro_line = _tick(engine, None, 256)
        assert intro_line.startswith("Chat with a [Dolly 2.0]")  # no model named before the backend says which
        process = start_a(looping_dir, dolly_jsonl, port)
        wait_for_v1(f"http://127.0.0.1:{port}", looping_dir.name, process=process)
        wait_until(lambda: engine.state == "ready", "ready")  # no message was sent
        line, timer = status_line(engine)
        assert line.startswith(f"**Backend ready:** {looping_dir.name}") and not timer.active
        assert seen == ("failed", MAX_NEW_TOKENS_CAP)
        *_, intro_line = _tick(engine, seen, 256)  # the tick after the change names the backend's model
        assert intro_line.startswith(f"Chat with **`{looping_dir.name}`**, a [Dolly 2.0]")
    finally:
        engine.close()
        if process is not None:
            process.kill()
            process.wait(30)
    # Closed while failing, it stops asking.
    dead = BackendEngine(f"http://127.0.0.1:{free_port()}/v1").start()
    wait_until(lambda: dead.may_change and dead.state == "failed", "failed")
    dead.close()
    wait_until(lambda: not dead.may_change, "stopped asking", deadline_s=5)


def test_a_backend_that_never_answers_is_a_clear_message(dolly_jsonl, monkeypatch):
    import socket

    from space import backend

    monkeypatch.setattr(backend, "READ_TIMEOUT_S", 1.0)
    with socket.socket() as silent:  # accepts connections, never answers: a stuck or overloaded server
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/v1"
        front, front_url = start_b(url, dolly_jsonl, "--backend-model", "dolly")
        try:
            client = Client(front_url, verbose=False)
            with pytest.raises(Exception, match=f"The backend at {url} did not answer within 1 s"):
                client.predict("Hello?", max_new_tokens=3, api_name="/chat")
            with pytest.raises(Exception, match="did not answer within 1 s"):  # still up, still clear
                client.predict("Hello again?", max_new_tokens=3, api_name="/chat")
        finally:
            front.close()


def test_a_lone_surrogate_through_the_backend_is_a_clear_error(app_b, looping_dir):
    from tests.test_api_errors import CHAT, call_http

    # JSON's "\ud800" (half of a character pair) cannot be sent on as UTF-8: B says so before sending.
    event, data = call_http(app_b, "/chat", list({**CHAT, "message": "Hi \ud800"}.values()))
    assert event == "error" and "The message is not valid text: character 4 is a lone surrogate" in data["error"], data
    assert Client(app_b, verbose=False).predict("Still there?", max_new_tokens=7, api_name="/chat") == expected(looping_dir, 7)
