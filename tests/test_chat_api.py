"""The /chat API of the whole app (app.py), launched for real and called with gradio_client.

The model is a tiny GPT-NeoX saved to a temp folder and passed as `--model`, the way users pass a
checkpoint. It repeats a short script forever, so every reply's text is known in advance from its
length: that is how the concurrency test tells each client's answer apart.
"""
import threading
import time

import pytest
from gradio_client import Client

from space import chat
from tests.conftest import serve
from tests.generations import PeakGenerations, stop_and_check
from tests.tiny_model import save_scripted_model

LOOP = " The capital of"


@pytest.fixture(scope="module")
def looping_dir(tmp_path_factory):
    return save_scripted_model(tmp_path_factory.mktemp("looping"), LOOP, loop=True,
                               hidden_size=256, num_layers=6, num_heads=8, max_positions=4096)


@pytest.fixture(scope="module")
def served(looping_dir, dolly_jsonl):
    demo = serve("--model", looping_dir, "--data", dolly_jsonl, "--concurrency", "4")
    url = demo.local_url
    client = Client(url, verbose=False)
    deadline = time.monotonic() + 120
    while True:  # the model loads in the background; wait as a user would
        try:
            client.predict("ready?", max_new_tokens=1, api_name="/chat")
            break
        except Exception as error:
            if "still loading" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    yield url, client
    demo.close()


def expected(looping_dir, tokens: int) -> str:
    """The reply of the looping model after `tokens` new tokens."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(looping_dir)
    cycle = [int(i) for i in (looping_dir / "script_ids.txt").read_text().split()]
    ids = (cycle * (tokens // len(cycle) + 1))[:tokens]
    return tokenizer.decode(ids).strip()


def test_message_alone_is_enough(served, looping_dir):
    _, client = served
    answer = client.predict("What is the capital?", api_name="/chat")
    assert answer == expected(looping_dir, 256)  # the default: 256 new tokens
    assert "###" not in answer


def test_streaming_yields_growing_text(served, looping_dir):
    _, client = served
    job = client.submit("Tell me more.", "Some context.", max_new_tokens=40, api_name="/chat")
    final = job.result(timeout=60)
    outputs = job.outputs()
    assert len(outputs) >= 10
    assert all(b.startswith(a) and len(b) > len(a) for a, b in zip(outputs, outputs[1:]))
    assert final == outputs[-1] == expected(looping_dir, 40)


def test_stop_ends_the_generation(served):
    _, client = served
    before = chat.generation_threads()  # follow this reply's own thread, whatever else runs
    job = client.submit("Go on forever.", max_new_tokens=1000, api_name="/chat")
    deadline = time.monotonic() + 60
    while len(job.outputs()) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    stop_and_check(job.cancel, before, timeout=10)
    time.sleep(0.5)  # what was already on its way may still arrive ...
    streamed = len(job.outputs())
    time.sleep(0.5)
    assert len(job.outputs()) == streamed < 200  # ... then nothing more; far from 1,000 tokens


def test_eight_concurrent_clients_each_get_their_own_answer(served, looping_dir):
    url, _ = served
    results, errors = {}, []

    def ask(n):
        try:
            client = Client(url, verbose=False)
            job = client.submit(f"client {n}", max_new_tokens=5 + 3 * n, seed=n, api_name="/chat")
            results[n] = (job.result(timeout=120), job.outputs())
        except Exception as error:  # reported below, not lost in a thread
            errors.append(error)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(8)]
    with PeakGenerations() as peak:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
    assert not errors
    assert 1 <= peak.max <= 4  # never more than --concurrency 4 at once
    for n in range(8):
        final, outputs = results[n]
        assert final == expected(looping_dir, 5 + 3 * n)
        assert all(expected(looping_dir, 5 + 3 * n).startswith(partial) for partial in outputs)  # no one else's stream
    assert len({final for final, _ in results.values()}) == 8


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=-1), "temperature must be 0 or more"),
    (dict(top_p=0), r"top_p must be in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
    (dict(top_k=-3), "top_k must be 0 or more"),
    (dict(seed=-5), "seed must be -1"),
])
def test_invalid_settings_are_clear_errors_and_the_server_stays_up(served, kwargs, message):
    _, client = served
    with pytest.raises(Exception, match=message):
        client.predict("Hi", api_name="/chat", **kwargs)
    assert client.predict("Still there?", max_new_tokens=3, api_name="/chat")


def test_max_new_tokens_is_capped_whatever_a_caller_sends(served, looping_dir):
    _, client = served
    job = client.submit("Go on.", max_new_tokens=10**6, temperature=0, api_name="/chat")
    # the tiny model's window is 4,096 tokens: the server's cap of 1,024 applies
    assert job.result(timeout=120) == expected(looping_dir, chat.MAX_NEW_TOKENS_CAP)


def test_too_long_message_is_a_clear_error(served):
    _, client = served
    with pytest.raises(Exception, match="limit is 50,000"):
        client.predict("x" * 60_000, api_name="/chat")
    with pytest.raises(Exception, match="empty"):
        client.predict("  ", api_name="/chat")


def test_a_model_that_fails_to_load_leaves_the_explorer_working(tmp_path, dolly_jsonl, dolly_records):
    demo = serve("--model", tmp_path / "no-such-checkpoint", "--data", dolly_jsonl)
    try:
        client = Client(demo.local_url, verbose=False)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.predict("Hello", api_name="/chat")
            except Exception as error:
                if "still loading" in str(error) and time.monotonic() < deadline:
                    time.sleep(0.2)
                    continue
                assert "Model folder not found" in str(error) and "--model path/to/checkpoint" in str(error)
                break
        rows, total = client.predict([], "", 1, api_name="/explore")
        assert total == len(dolly_records)
        assert rows
    finally:
        demo.close()


# -- issue 7 §5: every value checked, with a message naming the input ------------------------------------
def test_a_seed_sent_as_a_string_of_an_exact_number_works(served, looping_dir):
    _, client = served
    as_text = client.predict("Hi", max_new_tokens=6, seed="7", api_name="/chat")
    as_number = client.predict("Hi", max_new_tokens=6, seed=7, api_name="/chat")
    assert as_text == as_number == expected(looping_dir, 6)


@pytest.mark.parametrize("kwargs, message", [
    (dict(seed="abc"), r"seed must be a whole number: -1 \(random\) or 0 to 2\*\*63-1; got 'abc'"),
    (dict(seed=1.5), "seed must be a whole number"),
    (dict(do_sample="banana"), "do_sample must be true or false; got 'banana'"),
    (dict(max_new_tokens="many"), "max_new_tokens must be a whole number, 1 or more"),
    (dict(temperature="hot"), r"temperature must be a number, 0 or more \(0 = greedy\)"),
])
def test_values_of_the_wrong_type_are_errors_that_name_the_input(served, kwargs, message):
    _, client = served
    with pytest.raises(Exception, match=message):
        client.predict("Hi", api_name="/chat", **kwargs)
    assert client.predict("Still there?", max_new_tokens=3, api_name="/chat")


def test_a_missing_message_is_a_clear_error(served):
    _, client = served
    with pytest.raises(Exception, match=r"message must be text \(a string\), got None"):
        client.predict(None, api_name="/chat")


def test_the_wrong_number_of_values_is_its_own_error(served):
    url, client = served
    with pytest.raises(Exception, match=r"/chat takes 9 input values, in this order: message, context, do_sample"):
        client.predict(*(["Hi"] + [1] * 14), api_name="/chat")
    # Over raw HTTP too, where Gradio itself would answer too few values with {"error": null}.
    import httpx

    for data in ([], ["Hi"] * 15):
        event = httpx.post(f"{url}gradio_api/call/chat", json={"data": data}, timeout=30).json()["event_id"]
        answer = httpx.get(f"{url}gradio_api/call/chat/{event}", timeout=60).text
        assert "event: error" in answer and "/chat takes 9 input values" in answer, answer
    assert client.predict("Still there?", max_new_tokens=3, api_name="/chat")
