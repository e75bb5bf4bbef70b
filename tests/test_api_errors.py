"""A catalogue of bad inputs to every public API endpoint (/chat, /explore, /export), each sent
through gradio_client and as raw HTTP (POST /gradio_api/call/<api>, then its event stream), against
the whole app launched for real with a tiny model and generated data.

For each: the error is a message that names the input (never Gradio's generic "The upstream Gradio
app has raised an exception", nor {"error": null}), and the server still answers a good request.
"""
import json
import time
import urllib.request

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.conftest import serve
from tests.tiny_model import save_tiny_model

# /chat's inputs in order, with good values: the message, then context and the settings.
CHAT = {"message": "Hello", "context": "", "do_sample": True, "temperature": 1.0, "top_p": 0.92, "top_k": 0,
        "max_new_tokens": 2, "repetition_penalty": 1.0, "seed": 1}
GOOD = {"/chat": list(CHAT.values()), "/explore": [[], "", 1], "/export": [[], "", "jsonl"]}


def chat(**changes):
    return list({**CHAT, **changes}.values())


# (endpoint, values sent, text the error must contain: the input's name), and whether gradio_client
# can send it (it fills in missing values itself, so too few values are raw-HTTP only).
CATALOGUE = [
    # /explore (categories, search, page)
    ("/explore", [[], "", "abc"], "page must be a whole number"),
    ("/explore", [[], "", 1.5], "page must be a whole number"),
    ("/explore", [[], "", "1.5"], "page must be a whole number"),
    ("/explore", [[], "", None], "page must be a whole number"),
    ("/explore", [[], "", True], "page must be a whole number"),
    ("/explore", [[], "", [2]], "page must be a whole number"),
    ("/explore", [[], "", 0], "Page 0 is out of range"),
    ("/explore", [[], "", -3], "Page -3 is out of range"),
    ("/explore", [[], "", 99], "Page 99 is out of range"),
    ("/explore", [["poetry"], "", 1], "Unknown category 'poetry'"),
    ("/explore", [7, "", 1], "categories must be a list of category names"),
    ("/explore", [[1, 2], "", 1], "categories must be a list of category names"),
    ("/explore", [{"open_qa": True}, "", 1], "categories must be a list of category names"),
    ("/explore", [[], 5, 1], "search must be text"),
    ("/explore", [[], ["river"], 1], "search must be text"),
    ("/explore", [[], "river " * 400, 1], "search is 2,400 characters long; the limit is 2,000"),
    ("/explore", [[], "", 1, "extra"], "Unknown signal 'extra'"),  # the optional 4th input: quality
    ("/explore", [[], "", 1, [], "extra"], "source: one of 'loaded', 'contributions', 'both', got 'extra'"),
    ("/explore", [[], "", 1, [], "loaded", "extra"],
     "/explore takes 3 to 5 input values, in this order: categories, search, page, quality (optional), source (optional)"),
    # /export (categories, search, file_format)
    ("/export", [[], "", "xml"], "Unknown export format 'xml' (file_format)"),
    ("/export", [[], "", None], "(file_format): use one of jsonl, csv, parquet"),
    ("/export", [[], "", 5], "(file_format): use one of jsonl, csv, parquet"),
    ("/export", [[], "", ["csv"]], "(file_format): use one of jsonl, csv, parquet"),
    ("/export", [["nope"], "", "csv"], "Unknown category 'nope'"),
    ("/export", ["nope", "", "csv"], "Unknown category 'nope'"),
    ("/export", [[], "x" * 5000, "csv"], "search is 5,000 characters long"),
    ("/export", [[], "", "csv", "mine"], "source: one of 'loaded', 'contributions', 'both', got 'mine'"),
    ("/export", [[], "", "csv", "loaded", 1],
     "/export takes 3 to 4 input values, in this order: categories, search, file_format, source (optional)"),
    # /chat (message, context, do_sample, temperature, top_p, top_k, max_new_tokens, repetition_penalty, seed)
    ("/chat", chat(seed="abc"), "seed"),
    ("/chat", chat(seed=1.5), "seed"),
    ("/chat", chat(seed=-2), "seed"),
    ("/chat", chat(temperature=-1), "temperature"),
    ("/chat", chat(temperature="hot"), "temperature"),
    ("/chat", chat(temperature="inf"), "temperature"),
    ("/chat", chat(top_p=0), "top_p"),
    ("/chat", chat(top_p=1.5), "top_p"),
    ("/chat", chat(top_k=-1), "top_k"),
    ("/chat", chat(top_k=2.5), "top_k"),
    ("/chat", chat(max_new_tokens=0), "max_new_tokens"),
    ("/chat", chat(repetition_penalty=0), "repetition_penalty"),
    ("/chat", chat(do_sample="banana"), "do_sample"),
    ("/chat", chat(message=None), "message"),
    # 15 values: before, every setting shifted one place and the error named the wrong one
    ("/chat", chat() + [1, 2, 3, 4, 5, 6], "/chat takes 9 input values, in this order: message, context, do_sample"),
]
TOO_FEW = [  # raw HTTP only (gradio_client cannot send too few values, nor a string that is not UTF-8)
    # JSON's "\ud800" is half of a character pair: before, a traceback from the tokenizer
    ("/chat", chat(message="Hi \ud800"), "The message is not valid text: character 4 is a lone surrogate"),
    ("/chat", chat(context="\udfff context"), "The Context is not valid text: character 1 is a lone surrogate"),
    ("/chat", [], "/chat takes 9 input values, in this order: message, context, do_sample"),
    ("/chat", ["Hello"], "/chat takes 9 input values"),
    ("/explore", [], "/explore takes 3 to 5 input values, in this order: categories, search, page, quality (optional), source (optional)"),
    ("/explore", [["open_qa"], "river"], "/explore takes 3 to 5 input values"),
    ("/export", [[]], "/export takes 3 to 4 input values, in this order: categories, search, file_format"),
]


@pytest.fixture(scope="module")
def served(tmp_path_factory, dolly_jsonl):
    model = save_tiny_model(tmp_path_factory.mktemp("model"))
    demo = serve("--model", model, "--data", dolly_jsonl)
    client = Client(demo.local_url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    deadline = time.monotonic() + 120
    for endpoint, values in GOOD.items():  # model and data load in the background: wait as a client would
        while True:
            try:
                client.predict(*values, api_name=endpoint)
                break
            except AppError as error:
                assert "still loading" in str(error) and time.monotonic() < deadline, str(error)
                time.sleep(0.2)
    yield demo.local_url, client
    demo.close()


def call_http(url: str, endpoint: str, values: list) -> tuple[str, object]:
    """POST the values as raw JSON, read the event stream; returns (last event, its data)."""
    request = urllib.request.Request(f"{url}gradio_api/call{endpoint}", data=json.dumps({"data": values}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        event_id = json.load(response)["event_id"]
    with urllib.request.urlopen(f"{url}gradio_api/call{endpoint}/{event_id}", timeout=60) as response:
        lines = response.read().decode().splitlines()
    events = [line[len("event: "):] for line in lines if line.startswith("event: ")]
    data = [line[len("data: "):] for line in lines if line.startswith("data: ")]
    return events[-1], json.loads(data[-1])


def still_answers(url: str, client: Client, endpoint: str) -> None:
    result = client.predict(*GOOD[endpoint], api_name=endpoint)
    if endpoint == "/explore":
        assert result[1] == 400
    elif endpoint == "/chat":
        assert isinstance(result, str) and result
    event, data = call_http(url, endpoint, GOOD[endpoint])
    assert event == "complete", data


def case_id(case):
    """The endpoint and what differs from its good request, e.g. `/chat seed='abc'`."""
    endpoint, values, _ = case
    good = GOOD[endpoint]
    names = list(CHAT) if endpoint == "/chat" else ["categories", "search", "page" if endpoint == "/explore" else "file_format"]
    if len(values) != len(good):
        return f"{endpoint} {len(values)} values"
    changed = [f"{name}={value!r}"[:40] for name, value, ok in zip(names, values, good) if value != ok or type(value) is not type(ok)]
    return f"{endpoint} {' '.join(changed)}"


@pytest.mark.parametrize("endpoint, values, names", CATALOGUE, ids=[case_id(c) for c in CATALOGUE])
def test_through_gradio_client(served, endpoint, values, names):
    url, client = served
    with pytest.raises(AppError) as error:
        client.predict(*values, api_name=endpoint)
    message = str(error.value)
    assert names in message and "upstream Gradio app has raised an exception" not in message, message
    still_answers(url, client, endpoint)


@pytest.mark.parametrize("endpoint, values, names", CATALOGUE + TOO_FEW, ids=[case_id(c) for c in CATALOGUE + TOO_FEW])
def test_through_raw_http(served, endpoint, values, names):
    url, client = served
    event, data = call_http(url, endpoint, values)
    assert event == "error"
    assert isinstance(data, dict) and isinstance(data.get("error"), str), data  # never {"error": null}
    assert names in data["error"], data
    still_answers(url, client, endpoint)


def test_exact_numbers_sent_as_text_are_accepted(served):
    url, client = served
    rows, total = client.predict(["open_qa"], "", "2", api_name="/explore")
    assert rows == client.predict(["open_qa"], "", 2, api_name="/explore")[0] and total > 20
    assert call_http(url, "/explore", [["open_qa"], "", "2"])[1][0] == rows
    assert client.predict(["open_qa"], "", 2.0, api_name="/explore")[0] == rows
    assert client.predict(["open_qa"], "", " JSONL ", api_name="/export").endswith(".jsonl")


def test_chat_takes_a_seed_sent_as_text(served):
    url, client = served
    seeded = chat(seed=7, max_new_tokens=8)
    first = client.predict(*seeded, api_name="/chat")
    assert client.predict(*chat(seed="7", max_new_tokens=8), api_name="/chat") == first
    event, data = call_http(url, "/chat", chat(seed="7", max_new_tokens=8))
    assert event == "complete" and data[-1] == first, data
