"""The app as people run it: a real launched Gradio server, called through gradio_client, and
`python app.py` in a subprocess for the flags (--share, --auth, --help)."""
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

import app
from dolly.data import REQUIRED_COLUMNS, load_records
from explorer.loader import DatasetLoader, build_index
from explorer.query import PAGE_SIZE
from tests.conftest import NO_MODEL, free_port, serve, stop_app as stop


ROOT = Path(__file__).resolve().parents[1]
# Names the Explorer's UI handlers would get if they leaked into the API.
UI_HANDLERS = {"/first", "/go", "/open_row", "/export_view", "/restore", "/charts", "/show", "/lambda", "/quality_view",
               "/quality_tick"}


def loaded(source) -> DatasetLoader:
    """The dataset loader app.py would make, already done loading (so a test knows what it serves)."""
    dataset = DatasetLoader(str(source)).start()
    assert dataset.wait(60), "the test dataset did not load within 60 s"
    return dataset


@pytest.fixture(scope="module")
def client(dolly_jsonl, tmp_path_factory):
    demo = serve("--data", dolly_jsonl, *NO_MODEL, dataset=loaded(dolly_jsonl))
    yield Client(demo.local_url, verbose=False, download_files=str(tmp_path_factory.mktemp("downloads")))
    demo.close()


def matching(records, categories=(), needle=""):
    return [i for i, r in enumerate(records)
            if (not categories or r["category"] in categories)
            and (not needle or any(needle.lower() in r[f].lower() for f in ("instruction", "context", "response")))]


def test_api_lists_only_the_stable_endpoints(client):
    named = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    assert {"/explore", "/export"} <= named
    assert not named & UI_HANDLERS


def test_explore_pages_through_a_filtered_search(client, dolly_records):
    wanted = matching(dolly_records, ["closed_qa", "summarization"], "RIVER")
    assert len(wanted) > PAGE_SIZE
    rows, total = client.predict(["closed_qa", "summarization"], "RIVER", 2, api_name="/explore")
    assert total == len(wanted)
    assert [r["row"] for r in rows] == wanted[PAGE_SIZE: 2 * PAGE_SIZE]
    assert {k: rows[0][k] for k in REQUIRED_COLUMNS} == dolly_records[wanted[PAGE_SIZE]]


def test_explore_with_no_categories_means_all(client, dolly_records):
    rows, total = client.predict([], "", 1, api_name="/explore")
    assert total == len(dolly_records) and [r["row"] for r in rows] == list(range(PAGE_SIZE))


@pytest.mark.parametrize("args, message", [
    ((["poetry"], "", 1), "Unknown category 'poetry'. Known categories: brainstorming"),
    (([], "", 0), "Page 0 is out of range: this selection has page(s) 1 to 20"),
    ((["open_qa"], "", 99), "Page 99 is out of range: this selection has page(s) 1 to 3"),
])
def test_explore_errors_are_clear_and_the_server_stays_up(client, args, message):
    with pytest.raises(AppError) as err:
        client.predict(*args, api_name="/explore")
    assert message in str(err.value)
    assert client.predict([], "", 1, api_name="/explore")[1] == 400


def raw_call(url: str, api: str, data: list) -> str:
    """The event stream of one call of `api`, sent as raw JSON as any HTTP client can (gradio_client
    itself cannot send a lone surrogate: it encodes the body as UTF-8 first)."""
    import httpx

    body = json.dumps({"data": data})  # ensure_ascii: a lone surrogate travels as the escape \ud800
    event = httpx.post(f"{url}gradio_api/call/{api}", content=body, headers={"Content-Type": "application/json"},
                       timeout=60).json()["event_id"]
    return httpx.get(f"{url}gradio_api/call/{api}/{event}", timeout=60).text


@pytest.mark.parametrize("search", ["\ud800", "caf\udfff"])
def test_explore_with_a_lone_surrogate_names_the_search(client, search):
    """JSON can carry a lone UTF-16 surrogate, which is no character: /explore answered `{"error": null}`."""
    for api, data in (("explore", [[], search, 1]), ("export", [[], search, "jsonl"])):
        stream = raw_call(client.src, api, data)
        assert "event: error" in stream, stream
        error = json.loads(stream.split("event: error", 1)[1].split("data:", 1)[1].strip().splitlines()[0])
        assert re.fullmatch(r"search is not valid text: character \d is a lone surrogate \('\\ud[89a-f][0-9a-f]{2}'\), "
                            r"half of a UTF-16 character pair\. Send the search as valid Unicode text\.", error["error"]), (api, error)
    assert client.predict([], "", 1, api_name="/explore")[1] == 400


@pytest.mark.parametrize("file_format", ["jsonl", "csv", "parquet"])
def test_export_returns_every_matching_row(client, dolly_records, file_format):
    path = client.predict(["open_qa", "closed_qa"], "the", file_format, api_name="/export")
    assert Path(path).suffix == f".{file_format}"
    loaded = load_records(path, progress=False)
    assert loaded.to_dict("records") == [dolly_records[i] for i in matching(dolly_records, ["open_qa", "closed_qa"], "the")]


def test_export_errors(client):
    with pytest.raises(AppError, match=r"Unknown export format 'xml' \(file_format\): use one of jsonl, csv, parquet"):
        client.predict([], "", "xml", api_name="/export")
    with pytest.raises(AppError, match="Unknown category 'nope'"):
        client.predict(["nope"], "", "csv", api_name="/export")
    assert Path(client.predict(["brainstorming"], "", "jsonl", api_name="/export")).exists()


def test_app_starts_when_the_data_does_not_load(tmp_path):
    missing = tmp_path / "missing.jsonl"
    demo = serve("--data", missing, *NO_MODEL, dataset=loaded(missing))
    texts = [block.value for block in demo.blocks.values() if type(block).__name__ == "Markdown"]
    assert any("Could not load the dataset" in str(t) and "missing" in str(t) for t in texts)
    url = demo.local_url
    try:
        with urllib.request.urlopen(url) as response:
            assert response.status == 200
        with pytest.raises(AppError, match="The dataset did not load: Data file not found"):
            Client(url, verbose=False).predict([], "", 1, api_name="/explore")
    finally:
        demo.close()


def test_an_empty_dataset_is_an_empty_state_not_an_error(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    demo = serve("--data", empty, *NO_MODEL, dataset=loaded(empty))
    texts = [str(block.value) for block in demo.blocks.values() if type(block).__name__ == "Markdown"]
    assert any("The dataset is empty" in t for t in texts)
    url = demo.local_url
    try:
        assert Client(url, verbose=False).predict([], "", 1, api_name="/explore") == ([], 0)
    finally:
        demo.close()


def held_loader(source):
    """A real loader of `source` whose load waits until the test sets the returned event, so
    "loading" lasts exactly as long as the test wants."""
    release = threading.Event()

    def slow_load(path):
        release.wait(60)
        return build_index(path)

    return DatasetLoader(str(source), load=slow_load), release


def test_explore_and_export_say_the_dataset_is_still_loading_then_work(dolly_jsonl, dolly_records):
    dataset, release = held_loader(dolly_jsonl)
    demo = serve("--data", dolly_jsonl, *NO_MODEL, dataset=dataset)
    url = demo.local_url
    try:
        with urllib.request.urlopen(url) as response:  # the page is served while the data loads
            assert response.status == 200
        client = Client(url, verbose=False)
        assert dataset.state == "loading"
        with pytest.raises(AppError, match=r"The dataset is still loading \(\d+ s so far\); try again in a moment"):
            client.predict([], "", 1, api_name="/explore")
        with pytest.raises(AppError, match="The dataset is still loading"):
            client.predict([], "", "jsonl", api_name="/export")
        release.set()
        assert dataset.wait(60) and dataset.state == "ready"
        rows, total = client.predict(["open_qa"], "", 1, api_name="/explore")
        assert total == sum(r["category"] == "open_qa" for r in dolly_records) and rows[0]["category"] == "open_qa"
        assert len(load_records(client.predict([], "", "jsonl", api_name="/export"), progress=False)) == len(dolly_records)
    finally:
        release.set()
        demo.close()


def test_a_dataset_that_fails_while_the_app_serves_gives_todays_error(tmp_path):
    missing = tmp_path / "gone.jsonl"
    dataset, release = held_loader(missing)
    demo = serve("--data", missing, *NO_MODEL, dataset=dataset)
    url = demo.local_url
    try:
        client = Client(url, verbose=False)
        with pytest.raises(AppError, match="still loading"):
            client.predict([], "", 1, api_name="/explore")
        release.set()
        assert dataset.wait(60) and dataset.state == "failed"
        with pytest.raises(AppError, match="The dataset did not load: Data file not found"):
            client.predict([], "", 1, api_name="/explore")
        with pytest.raises(AppError, match="The dataset did not load: Data file not found"):
            client.predict([], "", "csv", api_name="/export")
    finally:
        release.set()
        demo.close()


def test_auth_is_required_when_set(dolly_jsonl):
    assert app.parse_args(["--auth", "alice:s3:cret"]).auth == ("alice", "s3:cret")
    demo = serve("--data", dolly_jsonl, "--auth", "alice:s3:cret", *NO_MODEL, dataset=loaded(dolly_jsonl))
    try:
        with pytest.raises(Exception):
            Client(demo.local_url, verbose=False)
        authed = Client(demo.local_url, auth=("alice", "s3:cret"), verbose=False)
        assert authed.predict([], "", 1, api_name="/explore")[1] == 400
    finally:
        demo.close()


def run_app(*flags, env=None, timeout=60):
    return subprocess.run([sys.executable, "app.py", *flags], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("flags, env", [(["--auth", "nocolon"], {}), ([], {"DOLLY_AUTH": ":pw"}), (["--auth", "bob:"], {})])
def test_bad_auth_is_a_clear_error(flags, env):
    result = run_app(*flags, env=env)
    assert result.returncode == 2
    assert "--auth (or DOLLY_AUTH) must be USER:PASSWORD" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_port_from_the_environment_is_a_usage_error():
    result = run_app(env={"DOLLY_PORT": "eighty"})
    assert result.returncode == 2
    assert "--port (or DOLLY_PORT) must be a port number from 1 to 65535, got 'eighty'" in result.stderr


def test_help_explains_every_flag_and_never_shows_the_password():
    result = run_app("--help", env={"DOLLY_AUTH": "alice:topsecret"})
    assert result.returncode == 0
    for flag in ("--data", "--host", "--port", "--share", "--auth", "DOLLY_DATA", "DOLLY_AUTH"):
        assert flag in result.stdout
    assert "topsecret" not in result.stdout


def test_share_fails_politely_and_the_app_keeps_serving(dolly_jsonl):
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen([sys.executable, "app.py", "--data", str(dolly_jsonl), "--port", str(port), "--share", *NO_MODEL],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        lines, deadline = [], time.monotonic() + 90
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "keeps serving locally" in line:
                break
        output = "".join(lines)
        assert "no public --share link could be made" in output, output
        assert f"serving locally at http://127.0.0.1:{port}" in output
        assert "Traceback" not in output
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as response:
            assert response.status == 200
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        assert client.predict([], "", 1, api_name="/explore")[1] == 400
    finally:
        stop(process)


def test_python_app_py_serves_before_the_dataset_has_loaded(tmp_path, dolly_records):
    """A real `python app.py --data FILE` whose FILE is a named pipe: reading it blocks until the test
    writes the data, so the server must answer (and the API say "still loading") before the load ends."""
    from tests.dolly_data import write_jsonl

    pipe = tmp_path / "slow.jsonl"
    os.mkfifo(pipe)
    data = write_jsonl(tmp_path / "data.jsonl", dolly_records).read_bytes()
    port = free_port()
    process = subprocess.Popen([sys.executable, "app.py", "--data", str(pipe), "--port", str(port), *NO_MODEL],
                               cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, "app.py exited"
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "app.py did not answer within 90 s"
                time.sleep(0.1)
        client = Client(url, verbose=False)
        with pytest.raises(AppError, match="The dataset is still loading"):
            client.predict([], "", 1, api_name="/explore")
        with open(pipe, "wb") as writer:  # now the load can finish
            writer.write(data)
        deadline = time.monotonic() + 60
        while True:
            try:
                assert client.predict([], "", 1, api_name="/explore")[1] == len(dolly_records)
                break
            except AppError as error:
                assert "still loading" in str(error) and time.monotonic() < deadline, str(error)
                time.sleep(0.2)
    finally:
        stop(process)
