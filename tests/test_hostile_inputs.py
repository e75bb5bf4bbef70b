"""Issue 14's catalogue: hostile inputs walked through one real server, `python app.py` in its own
process (a tiny model, dolly-shaped data with Unicode records), as a hostile user would send them.

Each input must get a clear message (the status and words below: never a traceback, a 500 or
Gradio's `{"error": null}`), and afterwards the server must answer good requests, `/config` and
`GET /v1/models`, within 1 s (the issue's bound). The inputs cover every public door: the OpenAI API,
the Explorer's and Chat's Gradio endpoints, the page's own search event (regex included), uploads,
and the file routes.
"""
import json
import re  # the test's own fixed patterns below, never a user's
import time
import urllib.parse

import httpx
import pytest

from tests.conftest import start_app, stop_app
from tests.dolly_data import make_records, write_jsonl
from tests.test_explorer_search_server import probe, ui_search
from tests.tiny_model import save_tiny_model

ANSWER_WITHIN_S = 1.0  # the bound for a good request after a hostile one
UNICODE_ROWS = [  # verbatim text that must be found as typed (issue 14 §2)
    {"instruction": "Where is İstanbul?", "context": "", "response": "On the Bosphorus.", "category": "open_qa"},
    {"instruction": "Who was he?", "context": "ΣΊΣΥΦΟΣ was a king.", "response": "A king.", "category": "closed_qa"},
    {"instruction": "Is Cafe\u0301 Sperl open?", "context": "", "response": "Yes, in Vienna.", "category": "open_qa"},
]


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """(url, model name) of `python app.py` serving a tiny model and 600 rows, once both have loaded."""
    folder = tmp_path_factory.mktemp("hostile")
    model = save_tiny_model(folder / "tiny-dolly")
    data = write_jsonl(folder / "dolly.jsonl", make_records(600, seed=2) + UNICODE_ROWS)
    process, url = start_app("--data", data, "--model", model)
    try:
        while True:  # the states: serving, the dataset loaded, the model answering
            assert process.poll() is None, "app.py exited before it served"
            try:
                loaded = "still loading" not in ui_search(url, "", False)["summary"]
                answer = httpx.post(url + "v1/completions", timeout=60, json={
                    "model": model.name, "prompt": "ready?", "max_tokens": 1})
                if loaded and answer.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        yield url, model.name
    finally:
        stop_app(process)


# --- how each kind of input is sent; each returns (HTTP status, the text a client reads) -------------

def v1(method: str, path: str, body=None, raw: bytes | None = None, headers=None):
    def send(url, model):
        content = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        if content is not None:
            content = content.replace(b"MODEL", model.encode())
        answer = httpx.request(method, url + "v1/" + path.replace("MODEL", model), content=content, timeout=120,
                               headers={"Content-Type": "application/json", **(headers or {})})
        return answer.status_code, answer.text
    return send


def chat_body(**changes):
    return {"model": "MODEL", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}], **changes}


def gradio(endpoint: str, values: list):
    """POST /gradio_api/call/<endpoint> as raw JSON (gradio_client cannot send every value), then
    read its event stream: (200 when it completed, else 400, with the last event's data)."""
    def send(url, model):
        body = json.dumps({"data": values}).encode()
        started = httpx.post(f"{url}gradio_api/call/{endpoint}", content=body, timeout=60,
                             headers={"Content-Type": "application/json"})
        if started.status_code != 200:
            return started.status_code, started.text
        event_id = started.json()["event_id"]
        with httpx.stream("GET", f"{url}gradio_api/call/{endpoint}/{event_id}", timeout=120) as stream:
            lines = list(stream.iter_lines())
        events = [line[len("event: "):] for line in lines if line.startswith("event: ")]
        data = [line[len("data: "):] for line in lines if line.startswith("data: ")]
        return (200 if events[-1] == "complete" else 400), data[-1]
    return send


def search(text: str, regex: bool):
    """The page's own search event (what pressing Enter in the search box sends)."""
    def send(url, model):
        answer = ui_search(url, text, regex)
        return 200, answer["summary"] + "\n" + answer["table"]
    return send


def http(method: str, path: str, **kwargs):
    def send(url, model):
        answer = httpx.request(method, url + path, timeout=60, follow_redirects=False, **kwargs)
        return answer.status_code, answer.text
    return send


NESTED = b'{"model": "MODEL", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
MANY = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} about rivers"} for i in range(8_000)]
MANY.append({"role": "user", "content": "And now?"})
CATALOGUE = [
    # -- regex and search (§1, §2): the Explorer's page event and its API --------------------------
    ("catastrophic regex", search("(.*a){40}", True), 200, "matching rows|stopped after"),
    ("slow linear regex", search(".{1000}.{1000}x", True), 200, "matching rows|stopped after"),
    ("nested quantifier regex", search("((a+)+)+b", True), 200, "matching rows|No matching rows|stopped after"),
    ("unclosed regex", search("(unclosed", True), 200, "Invalid regular expression"),
    ("backreference regex", search(r"(a)\1", True), 200, "Invalid regular expression"),
    ("huge repeat regex", search("a{1001}", True), 200, "Invalid regular expression|too"),
    ("İstanbul verbatim", search("İstanbul", False), 200, r"1\*\* matching row"),
    ("Σ with final sigma", search("ΣΊΣΥΦΟΣ was", False), 200, r"1\*\* matching row"),
    ("NFC Café for an NFD record", search("Caf\u00e9 Sperl", False), 200, r"1\*\* matching row"),
    ("regex deep link", http("GET", "?" + urllib.parse.urlencode({"tab": "explorer", "regex": "1", "q": "(.*a){40}"})),
     200, "<html|<!doctype"),
    ("/explore lone surrogate", gradio("explore", [[], "\ud800", 1]), 400, "lone surrogate"),
    ("/explore regex-looking literal", gradio("explore", [[], "(.*a){40}", 1]), 200, ""),
    ("/explore search too long", gradio("explore", [[], "river " * 400, 1]), 400, "the limit is 2,000"),
    ("/explore page not a number", gradio("explore", [[], "", "abc"]), 400, "page must be a whole number"),
    ("/explore unknown category", gradio("explore", [["poetry"], "", 1]), 400, "Unknown category 'poetry'"),
    ("/explore categories not a list", gradio("explore", [7, "", 1]), 400, "categories must be a list"),
    ("/export lone surrogate", gradio("export", [[], "\udfff", "csv"]), 400, "lone surrogate"),
    ("/export unknown format", gradio("export", [[], "", "xml"]), 400, "Unknown export format 'xml'"),
    ("/export too many values", gradio("export", [[], "", "csv", "loaded", 1]), 400, "/export takes 3 to 4 input values"),
    # -- /chat (Gradio) -------------------------------------------------------------------------------
    ("/chat lone surrogate", gradio("chat", ["Hi \ud800", "", True, 1.0, 0.92, 0, 2, 1.0, 1]), 400,
     "lone surrogate"),
    ("/chat seed not a number", gradio("chat", ["Hi", "", True, 1.0, 0.92, 0, 2, 1.0, "abc"]), 400, "seed"),
    ("/chat temperature inf", gradio("chat", ["Hi", "", True, "inf", 0.92, 0, 2, 1.0, 1]), 400, "temperature"),
    ("/chat too few values", gradio("chat", ["Hi"]), 400, "/chat takes 9 input values"),
    # -- /v1 (§3, §4) ---------------------------------------------------------------------------------
    ('"stream": "false"', v1("POST", "chat/completions", chat_body(stream="false")), 400, "stream must be true or false"),
    ('"stream": "yes"', v1("POST", "chat/completions", chat_body(stream="yes")), 400, "stream must be true or false"),
    ('"do_sample": "banana"', v1("POST", "chat/completions", chat_body(do_sample="banana")), 400, "do_sample"),
    ("include_usage not a boolean", v1("POST", "chat/completions", chat_body(stream=True, stream_options={
        "include_usage": "no"})), 400, "include_usage must be true or false"),
    ("lone surrogate content", v1("POST", "chat/completions", raw=b'{"model": "MODEL", "messages": [{"role": "user", '
                                  b'"content": "Hi \\ud800"}]}'), 400, "lone surrogate"),
    ("lone surrogate stop", v1("POST", "completions", raw=b'{"model": "MODEL", "prompt": "Hi", "stop": ["\\ud800"]}'),
     400, r"stop\[0\] is not valid text"),
    ("lone surrogate key", v1("POST", "chat/completions", raw=b'{"model": "MODEL", "\\ud800": 1, "messages": '
                              b'[{"role": "user", "content": "Hi"}]}'), 400, "A key of the body is not valid text"),
    ("JSON nested 100,000 deep", v1("POST", "chat/completions", raw=NESTED), 400, "nested too deeply"),
    ("8,001 messages", v1("POST", "chat/completions", chat_body(messages=MANY)), 400, "the limit is 1,000"),
    ("a 50,001-character message", v1("POST", "chat/completions", chat_body(messages=[
        {"role": "user", "content": "x" * 50_001}])), 400, "the limit is 50,000"),
    ("a 9 MB body", v1("POST", "chat/completions", raw=b'{"model": "MODEL", "prompt": "' + b"x" * (9 * 2**20) + b'"}'),
     413, "larger than 8 MB"),
    ("response_format json_object", v1("POST", "chat/completions", chat_body(response_format={"type": "json_object"})),
     400, "'json_object' is not supported"),
    ("n = 5", v1("POST", "chat/completions", chat_body(n=5)), 400, "n must be 1"),
    ("tools", v1("POST", "chat/completions", chat_body(tools=[{"type": "function"}])), 400, "tools are not supported"),
    ("max_tokens as text", v1("POST", "chat/completions", chat_body(max_tokens="lots")), 400, "max_tokens"),
    ("temperature -1", v1("POST", "chat/completions", chat_body(temperature=-1)), 400, "temperature"),
    ("content a number", v1("POST", "chat/completions", chat_body(messages=[{"role": "user", "content": 5}])), 400,
     "content must be a string"),
    ("role tool", v1("POST", "chat/completions", chat_body(messages=[{"role": "tool", "content": "x"}])), 400,
     "must have a role among"),
    ("body not JSON", v1("POST", "chat/completions", raw=b"{not json"), 400, "not valid JSON"),
    ("body a list", v1("POST", "completions", raw=b"[1, 2]"), 400, "must be a JSON object"),
    ("prompt of token ids", v1("POST", "completions", {"model": "MODEL", "prompt": [1, 2, 3]}), 400,
     "prompt must be one string"),
    ("unknown model", v1("POST", "chat/completions", chat_body(model="gpt-4")), 404, "gpt-4"),
    ("GET an unknown model", v1("GET", "models/gpt-4"), 404, "does not exist here"),
    ("GET the served model", v1("GET", "models/MODEL"), 200, '"object":"model"'),
    # -- uploads and files (§3, §5) -------------------------------------------------------------------
    ("a 9 MB upload", http("POST", "gradio_api/upload", files={"files": ("big.bin", b"\0" * (9 * 2**20))}),
     "4xx", ""),
    ("a small upload", http("POST", "gradio_api/upload", files={"files": ("a.txt", b"hello")}), "4xx", ""),
    ("a file outside the app", http("GET", "gradio_api/file=/etc/passwd"), "4xx", ""),
    ("a path walking up", http("GET", "gradio_api/file=../../../../etc/passwd"), "4xx", ""),
]


@pytest.mark.parametrize("name, send, status, expected", CATALOGUE, ids=[entry[0] for entry in CATALOGUE])
def test_a_hostile_input_gets_a_clear_message_and_the_server_keeps_answering(app, name, send, status, expected):
    url, model = app
    got, text = send(url, model)
    if status == "4xx":
        assert 400 <= got < 500, (got, text[:500])
        assert "root:" not in text  # nothing of /etc/passwd
    else:
        assert got == status, (got, text[:1000])
    assert "Traceback" not in text and '"error": null' not in text and '"error":null' not in text, text[:1000]
    if expected:
        assert re.search(expected, text), (expected, text[:1000])
    took = probe(url)
    assert max(took.values()) <= ANSWER_WITHIN_S, f"after {name!r} a good request took {took}"


def test_the_catalogue_walks_at_least_forty_inputs():
    assert len(CATALOGUE) >= 40
