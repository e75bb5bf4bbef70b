"""Exports are stored once and do not pile up (explorer.export.ExportStore), and uploads are refused.

Crashes are real: a child process is killed with SIGKILL in the middle of writing an export, and
the next start-up must remove what it left, and nothing else.
"""
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow as pa
import pytest
from gradio_client import Client

from dolly.data import load_records
from explorer.export import ExportStore
from tests.conftest import NO_MODEL, serve

ROOT = Path(__file__).resolve().parents[1]


def table(rows: int) -> pa.Table:
    return pa.Table.from_pylist([{"instruction": f"q{i}", "context": "", "response": f"a{i}", "category": "open_qa"}
                                 for i in range(rows)])


def files_under(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_export_is_written_whole_and_old_ones_are_swept(tmp_path):
    store = ExportStore(tmp_path, max_age=600)
    first = Path(store.export(table(3), "jsonl"))
    second = Path(store.export(table(5), "csv"))
    assert first.name == "dolly-3-rows.jsonl" and second.name == "dolly-5-rows.csv"
    assert first.parent.parent == second.parent.parent == store.folder
    assert not list(tmp_path.rglob("*.partial"))
    # Someone else's files in our folders are never ours to remove.
    foreign = [first.parent / "notes.txt", store.folder / "keep.jsonl", tmp_path / "dolly-1-rows.jsonl"]
    for path in foreign:
        path.write_text("mine")
    old = time.time() - 601
    os.utime(first, (old, old))
    assert store.sweep() == 1
    assert not first.exists() and second.exists()
    assert all(path.read_text() == "mine" for path in foreign)
    # A new export sweeps too: the second one, made "old", goes when a third is written.
    os.utime(second, (old, old))
    third = Path(store.export(table(1), "parquet"))
    assert third.exists() and not second.exists() and not second.parent.exists()
    assert load_records(third, progress=False).to_dict("records") == table(1).to_pylist()


def test_a_failed_export_leaves_nothing(tmp_path):
    store = ExportStore(tmp_path)

    def fail(done, total):
        if done:
            raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space left"):
        store.export(table(25_000), "jsonl", progress=fail)
    assert [p for p in store.folder.rglob("*") if p.name != ".lock"] == []


APP_CHILD = """
import os, signal, sys, time
sys.path.insert(0, {root!r})
import pyarrow as pa
from explorer.export import ExportStore
store = ExportStore({folder!r})
rows = pa.Table.from_pylist([{{"instruction": "q", "context": "", "response": "a", "category": "open_qa"}}] * 30_000)
print(store.export(rows.slice(0, 10), "jsonl"), flush=True)
if {crash}:
    # Killed in the middle of the next export, as by the OOM killer or kill -9.
    store.export(rows, "jsonl", progress=lambda done, total: done and os.kill(os.getpid(), signal.SIGKILL))
print("serving", flush=True)
time.sleep(600)
"""


def run_app_child(folder: Path, crash: bool) -> tuple[subprocess.Popen, Path]:
    process = subprocess.Popen([sys.executable, "-c", APP_CHILD.format(root=str(ROOT), folder=str(folder), crash=crash)],
                               stdout=subprocess.PIPE, text=True)
    export = Path(process.stdout.readline().strip())
    assert export.exists(), "the child app did not export"
    return process, export


def test_start_up_removes_what_a_killed_app_left_and_nothing_else(tmp_path):
    root = tmp_path / "dolly-exports"
    running, running_export = run_app_child(root, crash=False)  # another app, still serving
    try:
        assert running.stdout.readline().strip() == "serving"
        crashed, crashed_export = run_app_child(root, crash=True)
        assert crashed.wait(60) == -signal.SIGKILL
        assert running_export.exists()  # the second app's start-up left the running one's alone
        partial = list(root.rglob("*.partial"))
        assert len(partial) == 1 and partial[0].stat().st_size > 0  # killed while writing
        foreign = {crashed_export.parent / "README.md": b"notes", crashed_export.parent.parent / "data.jsonl": b"{}",
                   root / "other.txt": b"x", root / "app-0123" / "dolly-1-rows.jsonl": b"not an app folder of ours"}
        for path, data in foreign.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        before = files_under(root)

        store = ExportStore(root)  # the app starting again

        assert store.removed_at_start == 2  # the crashed app's finished export and its partial one
        assert not crashed_export.exists() and not partial[0].exists()
        assert running_export.exists()  # a running app's exports are its own
        assert all(path.read_bytes() == data for path, data in foreign.items())
        gone = {str(crashed_export.relative_to(root)), str(partial[0].relative_to(root))}
        assert {k: v for k, v in before.items() if k not in gone} == {k: v for k, v in files_under(root).items()
                                                                      if not k.startswith(store.folder.name)}
    finally:
        running.kill()
        running.wait()


def test_a_dead_apps_emptied_folder_is_removed(tmp_path):
    crashed, export = run_app_child(tmp_path, crash=True)
    crashed.wait(60)
    ExportStore(tmp_path)
    assert not export.parent.parent.exists()


@pytest.fixture
def served_app(tmp_path, dolly_jsonl, monkeypatch):
    """The app as `python app.py` launches it (launch_options included), with Gradio's cache and the
    system temp folder inside tmp_path, so every copy of an export can be counted."""
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    demo = serve("--data", dolly_jsonl, *NO_MODEL)
    yield demo
    demo.close()


def wait_for_dataset(client) -> None:
    """Until /explore answers: the dataset loads in the background, as a client would wait."""
    deadline = time.monotonic() + 60
    while True:
        try:
            client.predict([], "", 1, api_name="/explore")
            return
        except Exception as error:
            assert "still loading" in str(error) and time.monotonic() < deadline, str(error)
            time.sleep(0.2)


def test_each_export_is_stored_once(served_app, tmp_path):
    client = Client(served_app.local_url, verbose=False, download_files=str(tmp_path / "downloads"))
    wait_for_dataset(client)
    for file_format in ("jsonl", "csv"):
        client.predict(["open_qa"], "", file_format, api_name="/export")
    server_side = [p for folder in (tmp_path / "gradio", tmp_path / "tmp") for p in folder.rglob("dolly-*-rows.*")]
    assert sorted(p.suffix for p in server_side) == [".csv", ".jsonl"], server_side
    assert all("dolly-exports" in p.parts for p in server_side)


def upload(url: str, size: int, route: str = "gradio_api/upload") -> tuple[int, str]:
    """POST a `size`-byte file as a browser's upload does, from a client without a session: (status, body)."""
    boundary = "dollyboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.bin\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + b"0" * size + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(url + route, data=body,
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_uploads_are_refused_and_nothing_is_stored(served_app, tmp_path):
    # The app has no upload control: Gradio's upload routes answer 403 with the reason, whatever the
    # size, and nothing reaches Gradio's cache (the old app took 9 MB from anyone and kept it a day).
    for route in ("gradio_api/upload", "gradio_api/process_recording", "gradio_api/component_server"):
        for size in (1000, 9 * 1024 * 1024):
            status, answer = upload(served_app.local_url, size, route)
            assert status == 403, (route, size, status, answer[:300])
            assert "This app takes no uploads" in answer
    stored = [p for p in (tmp_path / "gradio").rglob("*") if p.is_file() and p.name != ".lock"]
    assert stored == []
    with urllib.request.urlopen(served_app.local_url + "config", timeout=60) as response:  # and the server still answers
        assert response.status == 200


def _server_side_exports(tmp_path: Path) -> list[Path]:
    return [p for folder in (tmp_path / "gradio", tmp_path / "tmp") for p in folder.rglob("dolly-*-rows.*")]


def test_identical_exports_at_once_are_one_stored_file(served_app, tmp_path):
    # 20 clients asking for the same selection in the same format at the same moment: one file on the
    # server, served to all 20 (the old app wrote 20 copies and kept them an hour).
    client = Client(served_app.local_url, verbose=False, download_files=str(tmp_path / "downloads"))
    wait_for_dataset(client)
    jobs = [client.submit([], "", "jsonl", api_name="/export") for _ in range(20)]
    downloads = [Path(job.result(timeout=300)) for job in jobs]
    server_side = _server_side_exports(tmp_path)
    assert len(server_side) == 1, server_side
    assert {path.read_bytes() for path in downloads} == {server_side[0].read_bytes()}
    assert len(load_records(downloads[0], progress=False)) == 400
    # Another format or another selection is another file; asking again for one made before is not.
    client.predict([], "", "csv", api_name="/export")
    client.predict(["open_qa"], "", "jsonl", api_name="/export")
    client.predict([], "", "jsonl", api_name="/export")
    assert len(_server_side_exports(tmp_path)) == 3


def test_the_exports_together_are_capped_oldest_first(tmp_path):
    size = len(Path(ExportStore(tmp_path / "probe").export(table(2000), "jsonl")).read_bytes())
    store = ExportStore(tmp_path / "exports", max_bytes=int(size * 2.5))  # room for two of these, not three
    first, second = (Path(store.export(table(2000).slice(i, 2000), "jsonl")) for i in (0, 0))
    assert first == second  # the same rows: one file
    second = Path(store.export(table(2001).slice(1), "jsonl"))  # other rows, same size
    foreign = first.parent / "notes.txt"
    foreign.write_text("mine")
    old = time.time() - 10
    os.utime(first, (old, old))
    os.utime(second, (old + 1, old + 1))
    assert Path(store.export(table(2000), "jsonl")) == first  # asked again: it is the newest now
    third = Path(store.export(table(2002).slice(2), "jsonl"))
    assert first.exists() and third.exists() and not second.exists()  # the oldest went
    assert foreign.read_text() == "mine"
    assert sum(p.stat().st_size for p in store.folder.rglob("dolly-*")) <= store.max_bytes
    # One export bigger than the whole cap is still made (and kept alone).
    small = ExportStore(tmp_path / "small", max_bytes=10)
    assert Path(small.export(table(5), "csv")).exists()


def test_a_csv_export_starts_with_a_byte_order_mark_and_loads_back_the_same(tmp_path):
    """Excel reads a CSV without a BOM in the PC's code page ("zÃ¼rich"); the project's loader, pandas
    and training read it either way."""
    records = [{"instruction": "Wo liegt Zürich?", "context": "", "response": "In der Schweiz, «am See».",
                "category": "open_qa"}, {"instruction": "q", "context": "c, with a comma", "response": "a\nb",
                                         "category": "closed_qa"}]
    store = ExportStore(tmp_path / "exports")
    try:
        path = Path(store.export(pa.Table.from_pylist(records), "csv"))
        raw = path.read_bytes()
        assert raw.startswith(b"\xef\xbb\xbf\"instruction\"") and raw.count(b"\xef\xbb\xbf") == 1
        assert load_records(str(path), progress=False).to_dict("records") == records
    finally:
        store.close()
